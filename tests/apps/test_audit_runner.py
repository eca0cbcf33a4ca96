"""evals/audit.py on one small test file: a killed and stale mutants, the kill rate, the tree untouched."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _audit():
    spec = importlib.util.spec_from_file_location("vtcompress_audit", ROOT / "evals" / "audit.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # two pytest sessions in subprocesses: ~15 s CPU
def test_audit_kills_a_mutant_and_flags_stale_ones(tmp_path, capsys):
    budget = "vtcompress/budget.py"
    before = (ROOT / budget).read_text()
    mutants = [
        {"id": "floor-to-ceil", "file": budget, "old": "math.floor(n * ratio + 1e-9)",
         "new": "math.ceil(n * ratio - 1e-9)", "what": "keeps one token too many"},
        {"id": "gone", "file": budget, "old": "this text is not in the file", "new": "x", "what": "stale"},
        {"id": "twice", "file": budget, "old": "return", "new": "return", "what": "stale: not unique"},
    ]  # fmt: skip
    path = tmp_path / "mutants.json"
    path.write_text(json.dumps(mutants))
    out_json = tmp_path / "results.json"
    results = _audit().main(
        [str(path), "--tests", "tests/core/test_budget_rules.py", "--timeout", "300", "--json", str(out_json)]
    )
    assert {r.id: r.status for r in results} == {
        "floor-to-ceil": "killed",
        "gone": "stale",
        "twice": "stale",
    }
    printed = capsys.readouterr().out
    assert "kill rate 1/1 = 100.0%" in printed and "machine:" in printed
    assert [r["status"] for r in json.loads(out_json.read_text())] == ["killed", "stale", "stale"]
    assert (ROOT / budget).read_text() == before  # the working tree is never mutated
    status = subprocess.run(
        ["git", "status", "--porcelain", budget], cwd=ROOT, capture_output=True, text=True
    )
    assert status.stdout == ""


def test_report_counts_survivors_in_the_kill_rate():
    audit = _audit()
    results = [audit.Result("a", "killed", 1.0, "x"), audit.Result("b", "survived", 1.0, "y"),
               audit.Result("c", "stale", 0.0, "z"), audit.Result("d", "killed", 2.0, "w")]  # fmt: skip
    text = audit.report(results, ["tests"])
    assert text.splitlines()[-1] == "killed 2, survived 1, stale 1, error 0: kill rate 2/3 = 66.7%"
    assert "survived  b" in text


def test_the_example_mutants_apply_to_this_tree():
    audit = _audit()
    mutants = audit.load_mutants(audit.DEFAULT_MUTANTS)
    assert len(mutants) >= 3
    assert [audit.stale_reason(ROOT, m) for m in mutants] == [None] * len(mutants)


def test_bad_mutant_files_are_refused(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([{"id": "x", "file": "a.py", "old": "a"}]))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "evals" / "audit.py"), str(path)], capture_output=True, text=True
    )
    assert proc.returncode != 0 and "lacks string field(s) ['new', 'what']" in proc.stderr
