"""The lmms-eval plugin end to end: the real ``lmms-eval`` command line on the tiny LLaVA-NeXT and
the offline tasks, through the sweep runner, single process and under ``accelerate launch``.

lmms-eval exits 0 even when generation failed (it logs the error and records an empty answer),
so every assertion here reads the answers, scores and token records it wrote, never its exit code.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("lmms_eval", reason='the lmms-eval plugin tests need: pip install "vtcompress[eval]"')

from tests.helpers.lmms_eval_common import (  # noqa: E402
    loglikelihood_request,
    offline,
    shape_requests,
    sweep_script,
    synthetic_script,
)
from vtcompress.budget import keep_count  # noqa: E402
from vtcompress.integrations.llava_next.layout import AnyResLayout  # noqa: E402

TASKS = ["vtc_document_qa", "vtc_shapes_qa"]
LIMIT = 3
RATIO = 0.25


sweep_module, synthetic = sweep_script(), synthetic_script()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    from vtcompress.integrations.llava_next.tiny import save_tiny_llava_next

    root = tmp_path_factory.mktemp("lmms_eval")
    with offline(root):
        yield root, save_tiny_llava_next(root / "tiny")


@pytest.fixture(scope="module")
def sweep(workspace):
    """globalcom2 and uniform at 0.25 plus the uncompressed model: three lmms-eval runs."""
    root, tiny = workspace
    out = root / "sweep"
    rows = sweep_module.main(
        ["--pretrained", str(tiny), "--methods", "globalcom2,uniform", "--ratios", f"{RATIO},1.0"]
        + ["--tasks", "vtc_offline", "--limit", str(LIMIT), "--batch-size", "2", "--out", str(out)]
    )
    return out, rows


def _run_dir(out: Path, name: str) -> Path:
    results = sweep_module.find_results(out / "runs" / name)
    assert results is not None, f"lmms-eval wrote no results for {name}"
    return results.parent


def _samples(run_dir: Path, task: str) -> list[dict]:
    (path,) = run_dir.glob(f"*_samples_{task}.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()]


def _answer(sample: dict) -> str:
    answer = sample["filtered_resps"]
    while isinstance(answer, list):
        answer = answer[0]
    return answer


RUNS = ["none_r1", f"globalcom2_r{RATIO:g}", f"uniform_r{RATIO:g}"]


@pytest.mark.slow
@pytest.mark.parametrize("run", RUNS)
def test_answers_non_empty_and_scores_written(sweep, run):
    run_dir = _run_dir(sweep[0], run)
    (results_file,) = run_dir.glob("*_results.json")
    results = json.loads(results_file.read_text())["results"]
    for task in TASKS:
        assert isinstance(results[task]["exact_match,none"], float)
        assert isinstance(results[task]["anls,none"], float)
        samples = _samples(run_dir, task)
        assert len(samples) == LIMIT
        assert all(_answer(s).strip() for s in samples), "an empty answer means generation failed"


@pytest.mark.slow
@pytest.mark.parametrize("run", RUNS)
def test_logged_kept_tokens_follow_the_method_rule(sweep, workspace, run):
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(workspace[1])
    run_dir = _run_dir(sweep[0], run)
    ratio = 1.0 if run == "none_r1" else RATIO
    for task, kind in zip(TASKS, ["document", "shapes"]):
        for sample in _samples(run_dir, task):
            counts = sample["token_counts"][0]
            record = counts["vtcompress"]
            assert record["ratio"] == ratio
            assert counts["input_tokens"] == record["prompt_tokens_after"]
            (image,) = record["images"]
            width, height = synthetic.generate(kind, LIMIT)[sample["doc_id"]].image.size
            layout = AnyResLayout.for_image(
                (height, width), cfg.image_grid_pinpoints, cfg.vision_config.image_size, 14
            )
            assert image["tokens_before"] == layout.num_tokens()
            # Budget rule of globalcom2 (exact allocation) and the baselines: floor(r * N) per image.
            assert image["tokens_kept"] == keep_count(layout.num_tokens(), ratio)
            assert sum(image["views_kept"]) == image["tokens_kept"]
            removed = (image["tokens_before"] - image["tokens_kept"]) + (
                image["newlines_before"] - image["newlines_kept"]
            )
            assert record["prompt_tokens_before"] - record["prompt_tokens_after"] == removed
            if ratio < 1.0:
                assert record["prefill_flops_after"] < record["prefill_flops_before"]
                assert record["timing"]["compress_seconds"] > 0
            else:
                assert record["prefill_flops_after"] == record["prefill_flops_before"]
            assert 0 < record["timing"]["prefill_seconds"] <= record["timing"]["generate_seconds"]


@pytest.mark.slow
def test_sweep_table_and_plots(sweep):
    out, rows = sweep
    assert {(r.method, r.ratio) for r in rows} == {("none", 1.0), ("globalcom2", RATIO), ("uniform", RATIO)}
    assert {r.task for r in rows} == set(TASKS)
    csv_lines = (out / "results.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + len(rows) == 1 + 3 * len(TASKS) * 3  # runs x tasks x metrics
    for r in rows:
        assert r.samples == LIMIT and r.empty_answers == 0
        assert r.kept_fraction == pytest.approx(1.0 if r.method == "none" else RATIO, abs=1e-3)
    base = {r.task: r.prefill_flops for r in rows if r.method == "none"}
    assert all(r.prefill_flops < base[r.task] for r in rows if r.method != "none")
    assert "| globalcom2 | 0.25 | vtc_shapes_qa | exact_match |" in (out / "results.md").read_text()
    for name in ("score_vs_ratio.png", "score_vs_flops.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_two_accelerate_processes_match_one_process(sweep, workspace):
    root, tiny = workspace
    out = root / "accelerate"
    args = sweep_module.parse_args(
        ["--pretrained", str(tiny), "--methods", "globalcom2", "--ratios", str(RATIO)]
        + ["--tasks", "vtc_offline", "--limit", str(LIMIT), "--batch-size", "2", "--out", str(out)]
        + ["--num-processes", "2", "--port", "29533"]
    )
    results_file = sweep_module.execute(sweep_module.Run("globalcom2", RATIO), args, out)
    log = (results_file.parents[1] / "log.txt").read_text()
    assert "Running on rank 1" in log, "two processes ran, each on its shard"
    single = _run_dir(sweep[0], f"globalcom2_r{RATIO:g}")
    multi = results_file.parent
    for task in TASKS:
        one = {s["doc_id"]: s for s in _samples(single, task)}
        two = {s["doc_id"]: s for s in _samples(multi, task)}
        assert sorted(two) == sorted(one) == list(range(LIMIT))
        for doc_id, sample in one.items():
            assert _answer(two[doc_id]) == _answer(sample)
            kept = [s["token_counts"][0]["vtcompress"]["visual_tokens_kept"] for s in (sample, two[doc_id])]
            assert kept[0] == kept[1]
    scores = [json.loads(next(d.glob("*_results.json")).read_text())["results"] for d in (single, multi)]
    for task in TASKS:
        assert {k: v for k, v in scores[0][task].items() if "stderr" not in k} == {
            k: v for k, v in scores[1][task].items() if "stderr" not in k
        }


# --- in-process checks of the model class ------------------------------------------------------


@pytest.fixture(scope="module")
def lmm(workspace):
    from vtcompress.integrations.llava_next.eval_model import CompressedLlavaNext

    model = CompressedLlavaNext.create_from_arg_string(
        f"pretrained={workspace[1]},method=globalcom2,ratio={RATIO},batch_size=3,allocation=exact",
        {"batch_size": 1, "device": None},  # what the command line adds: model_args win
    )
    model.task_dict, _ = shape_requests(0)
    return model


@pytest.mark.slow
def test_registered_through_the_entry_point():
    from lmms_eval.models import get_model

    from vtcompress.integrations.docowl.eval_model import CompressedDocOwl
    from vtcompress.integrations.llava_next.eval_model import CompressedLlavaNext

    assert get_model("vtcompress_llava_next") is CompressedLlavaNext
    assert get_model("vtcompress_docowl") is CompressedDocOwl


@pytest.mark.slow
def test_batched_answers_equal_one_by_one(lmm):
    task_dict, requests = shape_requests(5)
    lmm.task_dict = task_dict
    assert lmm.batch_size == 3 and lmm.device.type == "cpu"
    batched = lmm.generate_until(requests)
    lmm.batch_size_per_device = 1
    try:
        single = lmm.generate_until(requests)
    finally:
        lmm.batch_size_per_device = 3
    assert [r.text for r in batched] == [r.text for r in single]
    kept = [r.token_counts.vtcompress["visual_tokens_kept"] for r in batched]
    assert kept == [r.token_counts.vtcompress["visual_tokens_kept"] for r in single]
    assert {r.token_counts.vtcompress["timing"]["batch_size"] for r in batched} == {3, 2}


@pytest.mark.slow
def test_loglikelihood_at_ratio_one_equals_the_plain_model(workspace):
    import torch
    from transformers import LlavaNextForConditionalGeneration

    from vtcompress.integrations.llava_next.eval_model import CompressedLlavaNext

    lmm = CompressedLlavaNext(pretrained=str(workspace[1]), ratio=1.0, device="cpu")
    task_dict, _ = shape_requests(1)
    lmm.task_dict = task_dict
    doc = task_dict["t"]["test"][0]
    ((logprob, greedy),) = lmm.loglikelihood([loglikelihood_request(doc)])

    plain = LlavaNextForConditionalGeneration.from_pretrained(workspace[1]).eval()
    prompt = lmm._prompt(doc["question"], 1)
    inputs = lmm.processor(images=[doc["image"]], text=[prompt + " 3"], return_tensors="pt")
    prompt_ids = lmm.processor(images=[doc["image"]], text=[prompt], return_tensors="pt")["input_ids"]
    n_cont = inputs["input_ids"].shape[1] - prompt_ids.shape[1]
    with torch.inference_mode():
        logits = plain(**inputs).logits[0]
    target = inputs["input_ids"][0, -n_cont:]
    expected = torch.log_softmax(logits[-n_cont - 1 : -1], -1).gather(1, target[:, None]).sum().item()
    assert logprob == pytest.approx(expected, abs=1e-4)
    assert logprob < 0 and isinstance(greedy, bool)


def test_bad_model_args_name_the_fix(workspace):
    from vtcompress.integrations.llava_next.eval_model import CompressedLlavaNext

    with pytest.raises(TypeError, match="options are"):
        CompressedLlavaNext(pretrained=str(workspace[1]), method="globalcom2", ratio=0.5, alpha_typo=1)
    with pytest.raises(ValueError, match=r"ratio must be in \(0, 1\]"):
        CompressedLlavaNext(pretrained=str(workspace[1]), ratio=1.5)


@pytest.mark.slow
def test_loglikelihood_through_the_compressed_model(lmm):
    import math

    task_dict, _ = shape_requests(1)
    lmm.task_dict = task_dict
    doc = task_dict["t"]["test"][0]
    requests = [loglikelihood_request(doc, continuation) for continuation in (" 3", " 33")]
    (short, _), (longer, _) = lmm.loglikelihood(requests)
    assert math.isfinite(short) and short < 0
    # The longer continuation extends the shorter one by a token: one more negative log-prob.
    assert longer < short
    assert lmm.handle.last_stats.tokens_after == keep_count(lmm.handle.last_stats.tokens_before, RATIO)


# --- DocOwl1.5 -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_docowl(workspace):
    from vtcompress.integrations.docowl.tiny import save_tiny_docowl

    return save_tiny_docowl(workspace[0] / "tiny-docowl")


def _docowl_views(image_size: tuple[int, int]) -> int:
    from vtcompress.integrations.docowl.processing import DocOwlImageOptions, select_anchor

    options = DocOwlImageOptions(image_size=112)  # the tiny model's view size
    rows, cols = select_anchor(image_size, options.anchors, options.image_size)
    return 1 + rows * cols  # global view + crops


@pytest.mark.slow
def test_docowl_command_line(workspace, tiny_docowl):
    root = workspace[0]
    args = sweep_module.parse_args(
        ["--model", "vtcompress_docowl", "--pretrained", str(tiny_docowl), "--methods", "globalcom2"]
        + ["--ratios", str(RATIO), "--tasks", "vtc_offline", "--limit", str(LIMIT), "--batch-size", "2"]
        + ["--out", str(root / "docowl")]
    )
    results_file = sweep_module.execute(sweep_module.Run("globalcom2", RATIO), args, root / "docowl")
    results = json.loads(results_file.read_text())["results"]
    for task, kind in zip(TASKS, ["document", "shapes"]):
        assert isinstance(results[task]["anls,none"], float)
        for sample in _samples(results_file.parent, task):
            assert _answer(sample).strip()
            (image,) = sample["token_counts"][0]["vtcompress"]["images"]
            width, height = synthetic.generate(kind, LIMIT)[sample["doc_id"]].image.size
            views = _docowl_views((height, width))
            assert image["tokens_before"] == 16 * views  # 8x2 H-Reducer tokens a view (tiny)
            assert image["tokens_kept"] == keep_count(16 * views, RATIO) == sum(image["views_kept"])
            assert image["newlines_kept"] == views  # one vit_eos a view, always kept


@pytest.mark.slow
def test_docowl_uncompressed_records(tiny_docowl):
    from vtcompress.integrations.docowl.eval_model import CompressedDocOwl

    lmm = CompressedDocOwl(pretrained=str(tiny_docowl), method="globalcom2", ratio=1.0, batch_size=2)
    task_dict, requests = shape_requests(3)
    lmm.task_dict = task_dict
    results = lmm.generate_until(requests)
    for result, doc in zip(results, task_dict["t"]["test"]):
        record = result.token_counts.vtcompress
        views = _docowl_views((doc["image"].height, doc["image"].width))
        assert record["visual_tokens_kept"] == record["visual_tokens_before"] == 16 * views
        assert record["prompt_tokens_before"] == record["prompt_tokens_after"]
        assert result.text.strip()
