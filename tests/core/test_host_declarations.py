"""A model family is declared once, in its host folder, and the apps find it there.

What docs/contributing.md promises ("a host = one folder + one entry-point line + one docs page")
is checked here without installing anything: every declared family's folder, entry point,
declaration and docs page are complete, the apps list every declared family, no family name is
written outside its own folder, and a declaration that cannot be imported is an error, never a
silently missing host.
"""

from __future__ import annotations

import ast
import io
import re
import subprocess
import sys
import tokenize
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from vtcompress import hosts
from vtcompress.hosts import HostImportError, HostSpec, host_specs

ROOT = Path(__file__).resolve().parents[2]
INTEGRATIONS = ROOT / "integrations"
SPECS = host_specs()
REF_FIELDS = (
    "host",
    "loader",
    "load_uncompressed",
    "tiny_checkpoint",
    "tiny_builder",
    "prompt",
    "demo_views",
)


def _entry_point_lines() -> dict[str, str]:
    text = (ROOT / "pyproject.toml").read_text()
    section = text.split('[project.entry-points."vtcompress.hosts"]', 1)[1].split("\n[", 1)[0]
    return dict(re.findall(r'^([A-Za-z0-9_]+) = "([^"]+)"$', section, flags=re.M))


def test_every_family_is_one_folder_one_entry_point_and_one_docs_page():
    lines = _entry_point_lines()
    assert sorted(lines) == sorted(s.name for s in SPECS), "installed entry points differ from pyproject.toml"
    nav = (ROOT / "mkdocs.yml").read_text()
    for spec in SPECS:
        assert lines[spec.name] == f"vtcompress.integrations.{spec.name}:HOST", spec.name
        assert (INTEGRATIONS / spec.name / "__init__.py").is_file(), spec.name
        assert spec.docs_page and (ROOT / "docs" / spec.docs_page).is_file(), spec.name
        assert f": {spec.docs_page}" in nav, f"{spec.docs_page} is not in mkdocs.yml's nav"


def test_every_reference_of_every_declaration_imports():
    for spec in SPECS:
        for what in REF_FIELDS:
            if getattr(spec, what) is not None:
                assert callable(spec.load(what)), (spec.name, what)
        assert spec.host_class().supports is not None


def test_declarations_do_not_collide():
    for field in ("name", "display_name", "tiny_name", "loader_alias", "lmms_eval_model"):
        values = [getattr(s, field) for s in SPECS if getattr(s, field) is not None]
        assert len(values) == len(set(values)), field
    model_types = [t for s in SPECS for t in s.model_types]
    assert len(model_types) == len(set(model_types))


def test_what_the_apps_need_comes_together():
    """A family the CLI and demo load has a tiny model, a hub example and its demo views; one with
    a loader has a public name for it."""
    assert any(s.load_uncompressed for s in SPECS)
    for spec in SPECS:
        if spec.load_uncompressed:
            assert spec.model_types and spec.hub_example and spec.tiny_name and spec.tiny_checkpoint, (
                spec.name
            )
            assert spec.demo_views, spec.name
        if spec.loader:
            assert spec.loader_alias and spec.loader_alias.startswith("load_compressed_"), spec.name
        for method in spec.name_defaults:
            assert method in __import__("vtcompress").available_methods(), (spec.name, method)


def test_apps_find_every_declared_family():
    import vtcompress as vtc
    from vtcompress.integrations import lmms_eval
    from vtcompress.integrations.locate import default_methods, loadable_families, tiny_names
    from vtcompress.integrations.vllm.plugin import architectures

    assert lmms_eval.model_ids() == sorted(s.lmms_eval_model for s in SPECS if s.lmms_eval_model)
    for spec in SPECS:
        if spec.loader_alias:
            assert getattr(vtc, spec.loader_alias) is spec.load("loader")
            assert spec.loader_alias in dir(vtc)
        if spec.load_uncompressed:
            assert spec.display_name in loadable_families() and spec.display_name in default_methods()
            assert f"{spec.tiny_name} ({spec.display_name}" in tiny_names()
        if spec.vllm_architecture:
            assert architectures()[spec.vllm_architecture] == spec.vllm_model
    from vtcompress.integrations.vllm import ARCHITECTURE

    assert ARCHITECTURE in architectures()
    with pytest.raises(AttributeError, match="load_compressed_nothing"):
        vtc.load_compressed_nothing  # noqa: B018


def test_the_cli_help_names_every_loadable_family_and_tiny_model(monkeypatch):
    import argparse

    monkeypatch.setenv("COLUMNS", "10000")  # argparse wraps at hyphens otherwise
    from vtcompress.integrations.cli.main import add_run_arguments

    parser = argparse.ArgumentParser()
    add_run_arguments(parser)
    text = " ".join(parser.format_help().split())
    for spec in SPECS:
        if spec.load_uncompressed:
            assert spec.display_name in text and spec.tiny_name in text, spec.name


def test_reading_the_declarations_imports_no_model_library():
    code = (
        "import sys\n"
        "from vtcompress.hosts import host_specs\n"
        "specs = host_specs(); assert specs\n"
        "bad = [m for m in sys.modules if m.split('.')[0] == 'transformers' or m.endswith('.host')]\n"
        "assert not bad, bad\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def _patched_entry_points(monkeypatch, *points: EntryPoint) -> None:
    monkeypatch.setattr(hosts, "entry_points", lambda group: list(points))
    hosts.host_specs.cache_clear()


@pytest.fixture
def clean_cache():
    yield
    hosts.host_specs.cache_clear()


def test_a_registered_host_that_fails_to_import_is_an_error_naming_it(monkeypatch, clean_cache):
    import torch

    import vtcompress as vtc

    broken = EntryPoint("broken_family", "vtcompress_no_such_module_xyz:HOST", hosts.HOST_ENTRY_POINTS)
    _patched_entry_points(monkeypatch, broken)
    with pytest.raises(HostImportError) as err:
        vtc.compress(torch.nn.Linear(2, 2), "uniform")
    message = str(err.value)
    assert "\n" not in message and "'broken_family'" in message and "vtcompress_no_such_module_xyz" in message


def test_a_reference_that_fails_to_import_names_the_family_and_field():
    spec = HostSpec(name="toy", display_name="Toy", host="vtcompress_no_such_module_xyz:Host")
    with pytest.raises(HostImportError, match="'toy' cannot import its host vtcompress_no_such_module_xyz"):
        spec.host_class()
    with pytest.raises(ValueError, match="declares no loader"):
        spec.load("loader")


def test_an_unsupported_model_lists_the_declared_families():
    import torch

    import vtcompress as vtc

    with pytest.raises(TypeError, match="no host for Linear") as err:
        vtc.compress(torch.nn.Linear(2, 2), "uniform")
    for spec in SPECS:
        assert spec.model_classes[0] in str(err.value)


def test_a_bare_host_class_entry_point_still_works(monkeypatch, clean_cache):
    """The group's older form (the entry point names the host class) is read as a declaration."""
    point = EntryPoint(
        "old_style", "vtcompress.integrations.llava_pkg.host:LlavaPackageHost", "vtcompress.hosts"
    )
    _patched_entry_points(monkeypatch, point)
    (spec,) = host_specs()
    assert spec.name == "old_style" and spec.host_class().__name__ == "LlavaPackageHost"


# --- no family written outside its folder -----------------------------------------------------
# Family names as code (identifiers, module paths, string keys): docstrings and comments may name
# a family as an example. Two dependencies are real and listed: LLaVA-OneVision is LLaVA-NeXT's
# anyres with another tower (it reuses its layout), and the vLLM plugin serves LLaVA-NeXT through
# vLLM's own llava_next model.
FAMILY_NAMES = tuple(s.name for s in SPECS)
ALLOWED = {
    ("integrations/llava_onevision", "llava_next"),
    ("integrations/vllm", "llava_next"),
    # The vLLM app serves these families on vLLM's own model classes.
    ("integrations/vllm", "llava_onevision"),
    ("integrations/vllm", "qwen2_5_vl"),
    ("integrations/vllm", "qwen3_vl"),
}


def _docstring_starts(tree: ast.AST) -> set[tuple[int, int]]:
    starts = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                if isinstance(first.value.value, str):
                    starts.add((first.lineno, first.col_offset))
    return starts


def family_names_in_code(source: str) -> set[str]:
    """The family names ``source`` uses as code (identifiers and strings that are no docstring)."""
    pattern = re.compile(rf"(?<![A-Za-z0-9])({'|'.join(FAMILY_NAMES)})(?![A-Za-z0-9])")
    docstrings = _docstring_starts(ast.parse(source))
    kinds = {tokenize.NAME, tokenize.STRING, getattr(tokenize, "FSTRING_MIDDLE", tokenize.STRING)}
    found = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type in kinds and not (tok.type == tokenize.STRING and tok.start in docstrings):
            found.update(m.group(1) for m in pattern.finditer(tok.string))
    return found


def test_the_scan_sees_code_and_skips_prose():
    assert family_names_in_code('"""About qwen2_5_vl."""\n# llava_next\nx = 1\n') == set()
    assert family_names_in_code("from vtcompress.integrations.docowl import HOST\n") == {"docowl"}
    assert family_names_in_code('if family == "llava_onevision":\n    pass\n') == {"llava_onevision"}
    assert family_names_in_code('name = f"tiny {llava_pkg}"\n') == {"llava_pkg"}


def test_no_family_name_outside_its_folder():
    bad = []
    for folder in ("vtcompress", "integrations"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT)
            owner = "/".join(rel.parts[:2])
            for name in family_names_in_code(path.read_text()):
                if owner != f"integrations/{name}" and (owner, name) not in ALLOWED:
                    bad.append(f"{rel}: {name}")
    assert not bad, f"family names outside their folders: {bad}"


# --- a folder named vtcompress must not hide the package --------------------------------------
@pytest.mark.parametrize("folder", ["vtcompress", "checkout"])
def test_running_beside_a_checkout_named_vtcompress_is_one_line_naming_the_fix(tmp_path, folder):
    (tmp_path / folder).symlink_to(ROOT, target_is_directory=True)
    code = "import vtcompress.registry as r; print(sorted(r.available_methods()))"
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    if folder == "checkout":  # another name hides nothing: the installed package runs
        assert done.returncode == 0 and "globalcom2" in done.stdout, done.stderr
        return
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert "ShadowedPackageError" in last and "namespace package" in last
    assert str(tmp_path / folder) in last and "run from another directory or rename that folder" in last


def test_setup_py_maps_the_folders_pyproject_maps():
    """setup.py finds the packages under the folders pyproject.toml's package-dir names."""
    text = (ROOT / "pyproject.toml").read_text()
    mapping = re.search(r"^package-dir = \{(.*)\}$", text, flags=re.M).group(1)
    pyproject = dict(re.findall(r'"([^"]+)" = "([^"]+)"', mapping))
    setup_source = (ROOT / "setup.py").read_text()
    tree = ast.parse(setup_source)
    assign = next(n for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "PACKAGE_DIR")
    assert ast.literal_eval(assign.value) == pyproject
    for folder in pyproject.values():  # find_packages needs an __init__.py in every folder of code
        for path in (ROOT / folder).rglob("*.py"):
            assert (path.parent / "__init__.py").is_file(), f"{path.parent} holds code but no __init__.py"


def test_load_compressed_finds_the_family_by_tiny_name_and_by_model_type(tmp_path):
    import vtcompress as vtc

    model, _ = vtc.load_compressed("tiny-qwen2.5-vl")  # the family's default method
    spec = next(s for s in SPECS if s.tiny_name == "tiny-qwen2.5-vl")
    assert type(model).__name__ in spec.model_classes
    assert vtc.get_handle(model).config.method == spec.default_method
    folder = spec.load("tiny_checkpoint")()
    model, _ = vtc.load_compressed(folder, "random", ratio=0.5)  # model_type read from config.json
    assert type(model).__name__ in spec.model_classes and vtc.get_handle(model).config.ratio == 0.5
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ValueError, match=r"no vtcompress loader for .* \(model_type 'bert'\)"):
        vtc.load_compressed(tmp_path)
