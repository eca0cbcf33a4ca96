"""An lmms-eval run over odd images cannot fail silently: a sample the model cannot process is
logged with its error, the run goes on, and the process ends by counting the failures, with exit
code 1 when there were any (lmms-eval itself exits 0 whatever happened)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("lmms_eval", reason="the lmms-eval plugin tests need the eval extra (.ci/eval-setup.sh)")

# name -> what doc_to_visual returns; "not_an_image" fails in the model on every method.
ODD = ["normal", "thin", "tall", "gray", "rgba", "sixteen_bit", "three_px_high", "not_an_image"]
MUST_WORK = {"normal", "thin", "tall", "gray", "rgba", "sixteen_bit"}

UTILS = """
import numpy as np
from PIL import Image


def doc_to_visual(doc):
    name = doc["name"]
    if name == "not_an_image":
        return ["a string where an image should be"]
    return [{
        "normal": lambda: Image.new("RGB", (640, 480), (120, 160, 200)),
        "thin": lambda: Image.new("RGB", (1200, 40), (200, 10, 10)),
        "tall": lambda: Image.new("RGB", (40, 1200), (10, 200, 10)),
        "gray": lambda: Image.new("L", (300, 300), 90),
        "rgba": lambda: Image.new("RGBA", (300, 300), (0, 0, 255, 128)),
        "sixteen_bit": lambda: Image.fromarray((np.arange(90000).reshape(300, 300) * 7 % 65535).astype(np.uint16)),
        "three_px_high": lambda: Image.new("RGB", (600, 3), (50, 50, 50)),
    }[name]()]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return "What colour is it?"


def process_results(doc, results):
    return {"exact_match": float(results[0].strip() == "x")}
"""

YAML = """task: vtc_odd_images
dataset_path: json
dataset_kwargs:
  data_files:
    test: odd.jsonl
test_split: test
output_type: generate_until
doc_to_visual: !function utils.doc_to_visual
doc_to_text: !function utils.doc_to_text
doc_to_target: answer
process_results: !function utils.process_results
generation_kwargs:
  max_new_tokens: 3
  temperature: 0
  do_sample: false
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
metadata:
  - version: 0.1
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from vtcompress.integrations.llava_next.tiny import save_tiny_llava_next

    root = tmp_path_factory.mktemp("odd")
    tasks = root / "tasks"
    tasks.mkdir()
    (tasks / "utils.py").write_text(UTILS)
    (tasks / "vtc_odd_images.yaml").write_text(YAML)
    (tasks / "odd.jsonl").write_text("".join(json.dumps({"name": n, "answer": "x"}) + "\n" for n in ODD))
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(root / "hf"),
        "TOKENIZERS_PARALLELISM": "false",
        "CUDA_VISIBLE_DEVICES": "",
    }
    return root, tasks, save_tiny_llava_next(root / "tiny"), env


def _lmms_eval(setup, name: str, model_args: str):
    root, tasks, tiny, env = setup
    out = root / name
    cmd = [sys.executable, "-m", "lmms_eval", "--model", "vtcompress_llava_next"]
    cmd += ["--model_args", f"pretrained={tiny},method=globalcom2,ratio=0.25,{model_args}"]
    cmd += [
        "--tasks",
        "vtc_odd_images",
        "--include_path",
        str(tasks),
        "--log_samples",
        "--output_path",
        str(out),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    samples = [
        json.loads(line)
        for p in out.rglob("*_samples_vtc_odd_images.jsonl")
        for line in p.read_text().splitlines()
    ]
    return done, samples


@pytest.mark.slow
def test_bad_samples_are_recorded_and_the_run_goes_on_then_exits_1(setup):
    done, samples = _lmms_eval(setup, "skip", "batch_size=3")
    assert done.returncode == 1, done.stderr[-3000:]
    by_name = {}
    for s in samples:
        by_name[ODD[s["doc_id"]]] = s["token_counts"][0]["vtcompress"]
    assert sorted(by_name) == sorted(ODD), "every sample is in the log, failed or not"
    failed = {n for n, r in by_name.items() if r["failed"]}
    assert "not_an_image" in failed and not failed & MUST_WORK, failed
    assert "takes images only" in by_name["not_an_image"]["error"]
    for name in MUST_WORK:
        assert by_name[name]["error"] is None and by_name[name]["visual_tokens_kept"] > 0
    assert f"vtcompress: {len(failed)} of {len(ODD)} samples failed" in done.stderr


@pytest.mark.slow
def test_on_error_raise_stops_the_run_and_exits_1(setup):
    done, _ = _lmms_eval(setup, "raise", "batch_size=1,on_error=raise")
    assert done.returncode == 1, done.stderr[-3000:]
    # The first sample that fails stops it (a method may fail before the non-image does).
    assert "the run stopped on an error (on_error=raise): task 'vtc_odd_images', doc " in done.stderr


def test_bad_on_error_value_names_the_choices(setup):
    from vtcompress.integrations.llava_next.eval_model import CompressedLlavaNext

    with pytest.raises(ValueError, match="on_error must be skip .* or raise"):
        CompressedLlavaNext(pretrained=str(setup[2]), on_error="ignore")


def test_the_summary_names_the_first_failure():
    from vtcompress.integrations.lmms_eval.failures import FailureTally
    from vtcompress.integrations.lmms_eval.records import failed_record

    tally = FailureTally(samples=4)
    assert tally.summary() == "vtcompress: 0 of 4 samples failed" and tally.exit_code == 0
    record = failed_record(method="globalcom2", ratio=0.25, error=ValueError("bad\nmore"), doc_id=2, task="t")
    assert record["failed"] and record["error"] == "ValueError: bad"
    tally.failed.append(record)
    assert tally.exit_code == 1
    assert tally.summary().startswith(
        "vtcompress: 1 of 4 samples failed (first: task 't', doc 2: ValueError: bad)"
    )


def test_sweep_counts_failed_samples_and_exits_1(tmp_path):
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "evals" / "sweep.py"
    spec = importlib.util.spec_from_file_location("vtc_sweep_failures", path)
    sweep = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = sweep
    spec.loader.exec_module(sweep)
    ok = {
        "filtered_resps": ["a"],
        "token_counts": [
            {
                "vtcompress": {
                    "failed": False,
                    "prefill_flops_before": 2.0,
                    "prefill_flops_after": 1.0,
                    "visual_tokens_before": 8,
                    "visual_tokens_kept": 2,
                    "kept_fraction": 0.25,
                    "timing": {"prefill_seconds": 0.1},
                }
            }
        ],
    }
    bad = {
        "filtered_resps": [""],
        "token_counts": [{"vtcompress": {"failed": True, "error": "ValueError: x"}}],
    }
    samples = tmp_path / "x_samples_t.jsonl"
    samples.write_text("\n".join(json.dumps(s) for s in (ok, bad, ok)))
    summary = sweep.sample_summary(samples)
    assert (summary["samples"], summary["failed"], summary["empty_answers"]) == (3, 1, 1)
    assert summary["visual_tokens_kept"] == 2
    row = sweep.Row("globalcom2", 0.25, "t", "exact_match", 0.5, **summary)
    assert sweep.exit_code([row]) == 1
    assert sweep.failure_summary([row]).startswith("sweep: 1 of 3 samples failed (globalcom2 r=0.25 t: 1")
    assert sweep.exit_code([sweep.Row("globalcom2", 0.25, "t", "m", 1.0, **{**summary, "failed": 0})]) == 0
