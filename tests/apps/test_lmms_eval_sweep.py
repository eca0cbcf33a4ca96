"""The sweep runner's planning and failure handling (no lmms-eval needed)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("vtc_sweep_unit", ROOT / "evals" / "sweep.py")
sweep_module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = sweep_module
spec.loader.exec_module(sweep_module)


def test_command_line_reports_no_results_as_an_error(tmp_path, monkeypatch):
    """A run without a results file (lmms-eval exited 0 anyway) is an error naming its log."""
    monkeypatch.setattr(sweep_module.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0))
    args = sweep_module.parse_args(["--pretrained", "tiny", "--out", str(tmp_path)])
    with pytest.raises(RuntimeError, match="wrote no results"):
        sweep_module.execute(sweep_module.Run("globalcom2", 0.5), args, tmp_path)


def test_plan_runs_shares_the_uncompressed_run():
    runs = sweep_module.plan_runs(["globalcom2", "uniform"], [0.5, 1.0, 0.25])
    assert [r.name for r in runs] == [
        "none_r1",
        "globalcom2_r0.5",
        "globalcom2_r0.25",
        "uniform_r0.5",
        "uniform_r0.25",
    ]


def test_command_uses_accelerate_for_several_processes(tmp_path):
    args = sweep_module.parse_args(
        ["--pretrained", "tiny", "--out", str(tmp_path), "--num-processes", "2", "--batch-size", "4"]
    )
    cmd = sweep_module.lmms_eval_command(sweep_module.Run("globalcom2", 0.25), args, tmp_path)
    assert cmd[1:4] == ["-m", "accelerate.commands.launch", "--multi_gpu"]
    assert cmd[cmd.index("--num_processes") + 1] == "2"
    model_args = cmd[cmd.index("--model_args") + 1]
    assert model_args == "pretrained=tiny,method=globalcom2,ratio=0.25,batch_size=4"
    assert "--log_samples" in cmd and cmd[cmd.index("-m", 4) + 1] == "lmms_eval"
