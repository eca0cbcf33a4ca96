"""Which tests skip does not depend on how the suite is split or ordered.

Skip decisions made while collecting (skip/skipif marks, computed when a test module is imported,
and module-level ``importorskip``) are compared between one whole-suite collection and the suite
collected in two parts (the folders nearest the core first, then the rest): the same tests,
skipped for the same reasons. A skipif that read state an earlier-imported module changed
(an environment variable such as ``TRITON_INTERPRET``, a monkeypatched ``torch.cuda``) would
differ here.

The skips decided while running are the ``pytest.skip`` / ``importorskip`` calls inside tests;
the second test pins their reasons to a missing package, program or device, which do not change
during a run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIRST = ["tests/core", "tests/methods", "tests/kernels"]


def _probes(tmp_path: Path, runs: dict[str, list[str]]) -> dict[str, dict]:
    """Collect each selection in its own process (all at once) with the probe plugin."""
    procs = {}
    for name, paths in runs.items():
        env = {**os.environ, "VTCOMPRESS_SKIP_PROBE": str(tmp_path / f"{name}.json"), "OMP_NUM_THREADS": "1"}
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "tests.helpers.skip_probe",
        ]
        procs[name] = subprocess.Popen(
            [*cmd, *paths], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
    out = {}
    for name, proc in procs.items():
        log = proc.communicate(timeout=600)[0]
        path = tmp_path / f"{name}.json"
        assert path.exists(), log[-3000:]
        out[name] = json.loads(path.read_text())
    return out


@pytest.mark.slow  # three collections of the whole suite in subprocesses: ~1 min on 2 cores
def test_collection_time_skips_do_not_depend_on_the_split(tmp_path):
    rest = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").iterdir() if p.is_dir())
    rest = [p for p in rest if p not in FIRST and p != "tests/helpers" and not p.endswith("__pycache__")]
    found = _probes(tmp_path, {"whole": ["tests"], "first": FIRST, "second": rest})
    whole, first, second = found["whole"], found["first"], found["second"]
    assert sorted(first["tests"] + second["tests"]) == sorted(whole["tests"])
    assert {**first["skips"], **second["skips"]} == whole["skips"]


# What a skip inside a test may depend on: an optional package, a program or a device.
RUNTIME_SKIP_REASONS = re.compile(
    r"not installed|a CUDA device|needs a CUDA|no transformers-5 venv|transformers >= 4\.38"
)


def test_skips_inside_tests_name_a_missing_package_program_or_device():
    """Every ``pytest.skip(...)`` inside a test function names something the machine lacks."""
    bad = []
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        if path.resolve() == Path(__file__).resolve():
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            call = re.search(r"pytest\.skip\((.*)", line)
            if call and "allow_module_level" not in line and not RUNTIME_SKIP_REASONS.search(call.group(1)):
                bad.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not bad, "skips that may depend on test order or state:\n" + "\n".join(bad)
