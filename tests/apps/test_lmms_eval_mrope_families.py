"""The lmms-eval models of the M-RoPE families (``vtcompress_qwen2_5_vl``, ``vtcompress_qwen3_vl``) on
their tiny models: registered by the family's declaration alone, the command line through the
sweep runner, and the model class in process (batching, records, log-likelihoods)."""

from __future__ import annotations

import importlib
import json

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
from vtcompress.hosts import host_spec  # noqa: E402

RATIO = 0.25
TASKS = ["vtc_document_qa", "vtc_shapes_qa"]
LIMIT = 3
# Per family: the function that saves its tiny checkpoint, and the stock model class.
FAMILIES = {
    "qwen2_5_vl": ("save_tiny_qwen2_5_vl", "Qwen2_5_VLForConditionalGeneration"),
    "qwen3_vl": ("save_tiny_qwen3_vl", "Qwen3VLForConditionalGeneration"),
}

sweep_module, synthetic = sweep_script(), synthetic_script()


def merged_tokens(family: str, width: int, height: int) -> int:
    processing = importlib.import_module(f"vtcompress.integrations.{family}.processing")
    rows, cols = processing.merged_grid((height, width))
    return rows * cols


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request, tmp_path_factory):
    """``(name, spec, root, tiny checkpoint)`` of one family."""
    name = request.param
    tiny = importlib.import_module(f"vtcompress.integrations.{name}.tiny")
    root = tmp_path_factory.mktemp(f"lmms_eval_{name}")
    with offline(root):
        yield name, host_spec(name), root, getattr(tiny, FAMILIES[name][0])(root / "tiny")


def test_registered_through_the_entry_point(family):
    from lmms_eval.models import get_model

    _, spec, _, _ = family
    assert get_model(spec.lmms_eval_model) is spec.load("lmms_eval_class")


def test_refused_method_names_the_served_ones(family):
    _, spec, _, path = family
    with pytest.raises(ValueError, match="serves .*random, uniform"):
        spec.load("lmms_eval_class")(pretrained=str(path), method="globalcom2", ratio=0.5)


@pytest.mark.slow
def test_batched_answers_equal_one_by_one_and_records_follow_the_rule(family):
    from vtcompress import get_handle

    name, spec, _, path = family
    lmm = spec.load("lmms_eval_class").create_from_arg_string(
        f"pretrained={path},method=tome,ratio={RATIO},batch_size=3",
        {"batch_size": 1, "device": None},
    )
    assert get_handle(lmm.model).config.metric == "projected"  # the host's default for the name
    task_dict, requests = shape_requests(5)
    lmm.task_dict = task_dict
    batched = lmm.generate_until(requests)
    lmm.batch_size_per_device = 1
    single = lmm.generate_until(requests)
    assert [r.text for r in batched] == [r.text for r in single]
    for result, doc in zip(batched, task_dict["t"]["test"]):
        (image,) = result.token_counts.vtcompress["images"]
        before = merged_tokens(name, *doc["image"].size)
        assert image["tokens_before"] == before
        assert image["tokens_kept"] == keep_count(before, RATIO) == sum(image["views_kept"])


@pytest.mark.slow
def test_uncompressed_records_and_loglikelihood_equal_the_plain_model(family):
    import torch
    import transformers

    name, spec, _, path = family
    lmm = spec.load("lmms_eval_class")(pretrained=str(path), ratio=1.0, device="cpu", batch_size=2)
    task_dict, requests = shape_requests(3)
    lmm.task_dict = task_dict
    for result, doc in zip(lmm.generate_until(requests), task_dict["t"]["test"]):
        record = result.token_counts.vtcompress
        before = merged_tokens(name, *doc["image"].size)
        assert record["visual_tokens_kept"] == record["visual_tokens_before"] == before
        assert record["prompt_tokens_before"] == record["prompt_tokens_after"]

    doc = task_dict["t"]["test"][0]
    ((logprob, _),) = lmm.loglikelihood([loglikelihood_request(doc)])
    plain = getattr(transformers, FAMILIES[name][1]).from_pretrained(path).eval()
    prompt = lmm._prompt(doc["question"], 1)
    inputs = lmm.processor(images=[doc["image"]], text=[prompt + " 3"], return_tensors="pt")
    n_prompt = lmm.processor(images=[doc["image"]], text=[prompt], return_tensors="pt")["input_ids"].shape[1]
    n_cont = inputs["input_ids"].shape[1] - n_prompt
    with torch.inference_mode():
        logits = plain(**inputs).logits[0]
    target = inputs["input_ids"][0, -n_cont:]
    expected = torch.log_softmax(logits[-n_cont - 1 : -1], -1).gather(1, target[:, None]).sum().item()
    assert logprob == pytest.approx(expected, abs=1e-4)


@pytest.mark.slow
def test_command_line(family):
    name, spec, root, path = family
    args = sweep_module.parse_args(
        ["--model", spec.lmms_eval_model, "--pretrained", str(path), "--methods", "uniform"]
        + ["--ratios", str(RATIO), "--tasks", "vtc_offline", "--limit", str(LIMIT), "--batch-size", "2"]
        + ["--out", str(root / "sweep")]
    )
    results_file = sweep_module.execute(sweep_module.Run("uniform", RATIO), args, root / "sweep")
    results = json.loads(results_file.read_text())["results"]
    for task, kind in zip(TASKS, ["document", "shapes"]):
        assert isinstance(results[task]["anls,none"], float)
        (samples,) = results_file.parent.glob(f"*_samples_{task}.jsonl")
        for line in samples.read_text().splitlines():
            sample = json.loads(line)
            (image,) = sample["token_counts"][0]["vtcompress"]["images"]
            before = merged_tokens(name, *synthetic.generate(kind, LIMIT)[sample["doc_id"]].image.size)
            assert image["tokens_before"] == before
            assert image["tokens_kept"] == keep_count(before, RATIO)
