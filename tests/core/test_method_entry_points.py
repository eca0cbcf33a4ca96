"""Methods are found through the ``vtcompress.methods`` entry-point group: a separately installed
package adds one with no edit to vtcompress, and every consumer of the method list sees it.

The toy package is a module and a ``.dist-info`` folder in a temporary directory put on
``PYTHONPATH`` of a fresh interpreter: what ``pip install`` of a package with an entry point leaves
in ``site-packages``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

TOY_MODULE = """
from dataclasses import dataclass

from vtcompress.config import CompressionConfig
from vtcompress.methods.baselines import uniform
from vtcompress.registry import register_method


@dataclass
class ToyKeepConfig(CompressionConfig):
    \"\"\"Evenly spaced tokens, under another name.\"\"\"


register_method("toykeep", ToyKeepConfig, "toy method of a separate package")(uniform)
"""


def toy_package(where: Path, module: str = TOY_MODULE, name: str = "toykeep", value: str = "toy_vtc") -> Path:
    """A package ``toy-vtc`` declaring method ``name`` as ``value`` (the module holds ``module``)."""
    where.mkdir(parents=True, exist_ok=True)
    (where / "toy_vtc.py").write_text(textwrap.dedent(module))
    info = where / "toy_vtc-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-vtc\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[vtcompress.methods]\n{name} = {value}\n")
    return where


def run(code_or_args: str | list[str], site: Path | None) -> subprocess.CompletedProcess:
    args = ["-c", code_or_args] if isinstance(code_or_args, str) else code_or_args
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(str(p) for p in (site, ROOT) if p),
        "OMP_NUM_THREADS": "1",
    }
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    return toy_package(tmp_path_factory.mktemp("site"))


def test_builtin_methods_are_declared_entry_points():
    from vtcompress.registry import available_methods, declared_methods

    declared = declared_methods()
    assert {"globalcom2", "tokencorr", "pitome", "tome", "uniform", "random", "fastervlm"} <= set(declared)
    assert set(declared) <= set(available_methods())
    assert all(ep.dist.name == "vtcompress" for name, ep in declared.items() if name != "toykeep")


def test_importing_vtcompress_reads_no_entry_points():
    """Discovery is lazy: ``import vtcompress`` scans no installed metadata."""
    out = run(
        "import vtcompress, vtcompress.registry as r; print(r.declared_methods.cache_info().misses)", None
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0"


def test_an_installed_package_adds_a_method(site):
    out = run(
        "import vtcompress as vtc, torch\n"
        "from vtcompress.registry import get_method\n"
        "assert 'toykeep' in vtc.available_methods()\n"
        "from vtcompress.registry import make_config\n"
        "c = make_config('toykeep', ratio=0.5)\n"
        "print(type(c).__name__, vtc.ToyKeepConfig is type(c), get_method('toykeep').description)",
        site,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ToyKeepConfig True toy method of a separate package"


def test_the_cli_offers_it(site):
    out = run(["-m", "vtcompress", "run", "--help"], site)
    assert out.returncode == 0, out.stderr
    assert "toykeep" in out.stdout
    assert "toykeep" not in run(["-m", "vtcompress", "run", "--help"], None).stdout


def test_the_conformance_suite_runs_it(site):
    out = run(
        [
            "-m",
            "pytest",
            "tests/conformance/test_conformance.py",
            "--collect-only",
            "-q",
            "-k",
            "toykeep",
            "-p",
            "no:cacheprovider",
        ],
        site,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    collected = [line for line in out.stdout.splitlines() if "toykeep" in line]
    assert any("llava_next-toykeep" in line for line in collected)
    assert any("test_forward_counts_follow_the_rule" in line for line in collected)


def test_a_broken_package_fails_in_one_line_naming_it(tmp_path):
    broken = toy_package(tmp_path / "broken", "import no_such_module_here\n")
    out = run("from vtcompress.registry import make_config\nmake_config('toykeep', ratio=0.5)", broken)
    assert out.returncode != 0
    last = out.stderr.strip().splitlines()[-1]
    assert "toy-vtc" in last and "toykeep" in last and "no_such_module_here" in last
    silent = toy_package(tmp_path / "silent", "X = 1\n")
    out = run("from vtcompress.registry import get_method\nget_method('toykeep')", silent)
    last = out.stderr.strip().splitlines()[-1]
    assert "toy-vtc" in last and "registers no method" in last


def test_the_docs_table_check_asks_for_its_row(site):
    out = run(
        "from tests.conformance.docs_tables import table_problems\nprint('\\n'.join(table_problems()))", site
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == [
        "README.md: method 'toykeep' has no row in the methods x hosts table",
        "docs/index.md: method 'toykeep' has no row in the methods x hosts table",
    ]
