"""``vtcompress_llava_onevision``: the lmms-eval model on the tiny offline OneVision (eval env only)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("lmms_eval", reason='the lmms-eval plugin tests need: pip install "vtcompress[eval]"')

from tests.helpers.lmms_eval_common import offline, sweep_script, synthetic_script  # noqa: E402
from vtcompress.budget import keep_count  # noqa: E402
from vtcompress.integrations.llava_onevision.layout import OneVisionLayout  # noqa: E402

RATIO = 0.25
LIMIT = 3


sweep_module, synthetic = sweep_script(), synthetic_script()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    from vtcompress.integrations.llava_onevision.tiny import save_tiny_onevision

    root = tmp_path_factory.mktemp("lmms_eval_onevision")
    with offline(root):
        yield root, save_tiny_onevision(root / "tiny-onevision")


def _requests(count: int, images_per_doc: int = 1):
    from lmms_eval.api.instance import Instance

    docs = [s.record() for s in synthetic.generate("shapes", count * images_per_doc)]
    gen_kwargs = {"max_new_tokens": 4, "temperature": 0, "do_sample": False, "until": ["\n\n"]}
    grouped = [docs[i * images_per_doc : (i + 1) * images_per_doc] for i in range(count)]
    task_docs = [{"question": g[0]["question"], "images": [d["image"] for d in g]} for g in grouped]
    requests = [
        Instance(
            "generate_until",
            (task_docs[i]["question"], dict(gen_kwargs), lambda d: d["images"], i, "t", "test"),
            idx=0,
            metadata={"task": "t", "doc_id": i, "repeats": 1},
        )
        for i in range(count)
    ]
    return {"t": {"test": task_docs}}, requests


@pytest.fixture(scope="module")
def lmm(workspace):
    from vtcompress.integrations.llava_onevision.eval_model import CompressedLlavaOnevision

    return CompressedLlavaOnevision.create_from_arg_string(
        f"pretrained={workspace[1]},method=globalcom2,ratio={RATIO},batch_size=3",
        {"batch_size": 1, "device": None},
    )


def test_registered_through_the_entry_point():
    from lmms_eval.models import get_model

    from vtcompress.integrations.llava_onevision.eval_model import CompressedLlavaOnevision

    assert get_model("vtcompress_llava_onevision") is CompressedLlavaOnevision


def test_method_names_get_the_host_settings_and_cls_methods_are_refused(workspace, lmm):
    from vtcompress.integrations.llava_onevision.eval_model import CompressedLlavaOnevision

    assert lmm.handle.config.score == "mean_cos"
    with pytest.raises(ValueError, match="does not provide"):
        CompressedLlavaOnevision(pretrained=str(workspace[1]), method="fastervlm", ratio=0.5)


@pytest.mark.slow
def test_batched_answers_equal_one_by_one_and_counts_follow_the_rule(lmm):
    task_dict, requests = _requests(4)
    lmm.task_dict = task_dict
    batched = lmm.generate_until(requests)
    lmm.batch_size_per_device = 1
    try:
        single = lmm.generate_until(requests)
    finally:
        lmm.batch_size_per_device = 3
    assert [r.text for r in batched] == [r.text for r in single]
    for result, doc in zip(batched, task_dict["t"]["test"]):
        (image,) = result.token_counts.vtcompress["images"]
        layout = OneVisionLayout.for_image((doc["images"][0].height, doc["images"][0].width))
        assert image["tokens_before"] == layout.num_tokens()
        assert image["tokens_kept"] == keep_count(layout.num_tokens(), RATIO) == sum(image["views_kept"])
        assert image["newlines_kept"] == layout.num_newlines()


@pytest.mark.slow
def test_a_request_with_two_images_is_a_multi_image_sample(lmm):
    task_dict, requests = _requests(2, images_per_doc=2)
    lmm.task_dict = task_dict
    for result in lmm.generate_until(requests):
        images = result.token_counts.vtcompress["images"]
        assert [(im["tokens_before"], im["tokens_kept"], im["newlines_kept"]) for im in images] == [
            (729, keep_count(729, RATIO), 1)
        ] * 2


@pytest.mark.slow
def test_command_line(workspace):
    root, tiny = workspace
    args = sweep_module.parse_args(
        ["--model", "vtcompress_llava_onevision", "--pretrained", str(tiny), "--methods", "uniform"]
        + ["--ratios", str(RATIO), "--tasks", "vtc_offline", "--limit", str(LIMIT), "--batch-size", "2"]
        + ["--out", str(root / "sweep")]
    )
    results_file = sweep_module.execute(sweep_module.Run("uniform", RATIO), args, root / "sweep")
    results = json.loads(results_file.read_text())["results"]
    for task, kind in [("vtc_document_qa", "document"), ("vtc_shapes_qa", "shapes")]:
        assert isinstance(results[task]["anls,none"], float)
        (path,) = results_file.parent.glob(f"*_samples_{task}.jsonl")
        for line in path.read_text().splitlines():
            sample = json.loads(line)
            (image,) = sample["token_counts"][0]["vtcompress"]["images"]
            width, height = synthetic.generate(kind, LIMIT)[sample["doc_id"]].image.size
            layout = OneVisionLayout.for_image((height, width))
            assert image["tokens_kept"] == keep_count(layout.num_tokens(), RATIO)
