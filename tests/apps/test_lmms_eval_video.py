"""The video path of the lmms-eval models (OneVision, Qwen2.5-VL, Qwen3-VL) on the offline video task, and
the video inputs built without the video processor checked against it (eval env only: the video
processors need torchvision)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("lmms_eval", reason='the lmms-eval plugin tests need: pip install "vtcompress[eval]"')
pytest.importorskip("torchvision", reason="the transformers video processors need torchvision")

import torch  # noqa: E402

from tests.helpers.lmms_eval_common import evals_script, offline  # noqa: E402
from vtcompress.integrations.examples import example  # noqa: E402
from vtcompress.integrations.video_frames import read_clip  # noqa: E402

RATIO = 0.25
FRAMES = 4
video = evals_script("tasks/vtc_offline/video_synthetic.py")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("lmms_eval_video")
    with offline(root):
        yield root


def _frames_array(clip) -> np.ndarray:
    return np.stack([np.asarray(f) for f in clip.frames])


def test_onevision_video_pixels_equal_the_video_processor():
    from transformers.models.llava_onevision.video_processing_llava_onevision import (
        LlavaOnevisionVideoProcessor,
    )

    from tests.helpers.video_inputs import tiny_onevision
    from vtcompress.integrations.llava_onevision.video_inputs import clip_pixels

    _, processor = tiny_onevision()
    ip = processor.image_processor
    clip = read_clip(example("clip").path, FRAMES)
    stock = LlavaOnevisionVideoProcessor(
        size={"height": 384, "width": 384}, image_mean=ip.image_mean, image_std=ip.image_std
    )
    ref = stock(videos=[_frames_array(clip)], return_tensors="pt")["pixel_values_videos"]
    torch.testing.assert_close(clip_pixels(clip.frames, ip, 384), ref, atol=1e-5, rtol=0)


def test_qwen_video_pixels_match_the_video_processor():
    """Same grid, same patch order; values within resize rounding (PIL vs torchvision bicubic)."""
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    from tests.conftest import tiny_qwen2_5_vl
    from vtcompress.integrations.qwen2_5_vl.video_inputs import clip_pixels

    _, processor = tiny_qwen2_5_vl()
    ip = processor.image_processor
    clip = read_clip(example("clip").path, FRAMES)
    stock = Qwen2VLVideoProcessor(image_mean=ip.image_mean, image_std=ip.image_std)
    ref = stock(videos=[_frames_array(clip)], return_tensors="pt")
    pixels, grid = clip_pixels(clip.frames, ip)
    assert grid == tuple(ref["video_grid_thw"][0].tolist())
    diff = (pixels - ref["pixel_values_videos"]).abs()
    assert diff.mean() < 1e-5 and diff.max() < 0.05


def test_qwen3_video_inputs_equal_the_processor_with_its_video_processor():
    """The prompt (a timestamp and a run per time step) token for token, the grid exactly, and
    the pixels within resize rounding (PIL vs torchvision bicubic), with the file's frame indices
    and frame rate as the video metadata."""
    from transformers import Qwen3VLProcessor
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor
    from transformers.video_utils import VideoMetadata

    from tests.conftest import tiny_qwen3_vl
    from vtcompress.integrations.prompt import chat_prompt
    from vtcompress.integrations.qwen3_vl.prompt import IMAGE_PROMPT, VIDEO_TOKEN
    from vtcompress.integrations.qwen3_vl.video_inputs import video_inputs

    model, processor = tiny_qwen3_vl()
    ip = processor.image_processor
    clip = read_clip(example("clip").path, FRAMES)
    ours = video_inputs(model.config, processor, clip.frames, "What happens?", clip.seconds_between)
    video = Qwen3VLVideoProcessor(image_mean=ip.image_mean, image_std=ip.image_std)
    stock = Qwen3VLProcessor(image_processor=ip, tokenizer=processor.tokenizer, video_processor=video)
    text = chat_prompt(processor, "What happens?", 1).replace(IMAGE_PROMPT, VIDEO_TOKEN)
    metadata = VideoMetadata(total_num_frames=clip.total, fps=clip.fps, frames_indices=clip.indices)
    ref = stock(
        text=[text],
        videos=[_frames_array(clip)],
        video_metadata=[metadata],
        do_sample_frames=False,
        cap_pixels_per_frame=False,
        return_tensors="pt",
    )
    assert torch.equal(ours["video_grid_thw"], ref["video_grid_thw"])
    assert torch.equal(ours["input_ids"], ref["input_ids"])
    assert torch.equal(
        ours["mm_token_type_ids"], ref["mm_token_type_ids"].to(ours["mm_token_type_ids"].dtype)
    )
    diff = (ours["pixel_values_videos"] - ref["pixel_values_videos"]).abs()
    assert diff.mean() < 1e-2 and diff.max() < 0.2


def _video_requests(count: int, folder):
    from lmms_eval.api.instance import Instance

    docs = [s.record(folder) for s in video.generate(count)]
    gen_kwargs = {"max_new_tokens": 3, "temperature": 0, "do_sample": False, "until": ["\n\n"]}
    requests = [
        Instance(
            "generate_until",
            (docs[i]["question"], dict(gen_kwargs), lambda d: [d["video"]], i, "t", "test"),
            idx=0,
            metadata={"task": "t", "doc_id": i, "repeats": 1},
        )
        for i in range(count)
    ]
    return {"t": {"test": docs}}, requests


@pytest.fixture(scope="module", params=["llava_onevision", "qwen2_5_vl", "qwen3_vl"])
def family(request, workspace):
    if request.param == "llava_onevision":
        from vtcompress.integrations.llava_onevision.eval_model import CompressedLlavaOnevision as cls
        from vtcompress.integrations.llava_onevision.tiny import save_tiny_onevision as save
    elif request.param == "qwen2_5_vl":
        from vtcompress.integrations.qwen2_5_vl.eval_model import CompressedQwen2_5_VL as cls
        from vtcompress.integrations.qwen2_5_vl.tiny import save_tiny_qwen2_5_vl as save
    else:
        from vtcompress.integrations.qwen3_vl.eval_model import CompressedQwen3VL as cls
        from vtcompress.integrations.qwen3_vl.tiny import save_tiny_qwen3_vl as save
    path = save(workspace / request.param)
    return request.param, cls, path


def _lmm(family, method="vidcom2", ratio=RATIO, batch_size=2):
    _, cls, path = family
    return cls.create_from_arg_string(
        f"pretrained={path},method={method},ratio={ratio},batch_size={batch_size},max_frames_num={FRAMES}",
        {"device": "cpu"},
    )


def test_video_records_count_frames_and_kept_tokens(family, workspace):
    from vtcompress.integrations.lmms_eval.failures import TALLY

    lmm = _lmm(family)
    task_dict, requests = _video_requests(3, workspace / "clips")
    lmm.task_dict = task_dict
    failed = len(TALLY.failed)
    results = lmm.generate_until(requests)
    assert len(TALLY.failed) == failed, TALLY.failed[failed:]
    steps = FRAMES if family[0] == "llava_onevision" else FRAMES // 2  # Qwen: 2 frames a time step
    for result in results:
        record = result.token_counts.vtcompress
        assert record["failed"] is False and record["method"] == "vidcom2"
        assert record["frame_indices"] == [0, 5, 10, 15]  # 4 of 16 frames, uniformly
        (clip,) = record["images"]
        assert clip["media"] == "video" and clip["time_steps"] == steps == len(clip["views_kept"])
        assert clip["tokens_kept"] == int(RATIO * clip["tokens_before"])  # vidcom2's exact allocation
        assert sum(clip["views_kept"]) == clip["tokens_kept"]
        assert record["prompt_tokens_before"] - record["prompt_tokens_after"] == (
            clip["tokens_before"] - clip["tokens_kept"]
        )


def test_a_video_request_answers_as_the_model_does_on_the_same_inputs(family, workspace):
    """The plugin's answer is the compressed model's greedy answer on the family's video inputs."""
    lmm = _lmm(family, batch_size=1)
    task_dict, requests = _video_requests(2, workspace / "clips")
    lmm.task_dict = task_dict
    results = lmm.generate_until(requests)
    for request, result in zip(requests, results):
        clip = read_clip(task_dict["t"]["test"][request.args[3]]["video"], FRAMES)
        inputs = lmm._video_inputs(request.args[0], clip)
        with torch.inference_mode():
            out = lmm.model.generate(**inputs, max_new_tokens=3, do_sample=False)
        text = lmm.tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        assert result.text == text.split("\n\n")[0].strip()


def test_video_loglikelihood_at_ratio_one_equals_the_plain_model(family, workspace):
    from lmms_eval.api.instance import Instance

    lmm = _lmm(family, method="uniform", ratio=1.0, batch_size=1)
    task_dict, _ = _video_requests(1, workspace / "clips")
    lmm.task_dict = task_dict
    doc = task_dict["t"]["test"][0]
    request = Instance(
        "loglikelihood",
        (doc["question"], " red", lambda d: [d["video"]], 0, "t", "test"),
        idx=0,
        metadata={"task": "t", "doc_id": 0, "repeats": 1},
    )
    ((logprob, _),) = lmm.loglikelihood([request])
    inputs, n_cont = lmm._video_with_continuation(doc["question"], read_clip(doc["video"], FRAMES), " red")
    lmm.handle.remove()
    with torch.inference_mode():
        logits = lmm.model(**inputs).logits[0]
    target = inputs["input_ids"][0, -n_cont:]
    expected = torch.log_softmax(logits[-n_cont - 1 : -1], -1).gather(1, target[:, None]).sum().item()
    assert logprob == pytest.approx(expected, abs=1e-4) and logprob < 0


def test_the_video_task_builds_its_docs(workspace, monkeypatch):
    import datasets

    utils = evals_script("tasks/vtc_offline/utils.py")
    monkeypatch.setenv("VTC_OFFLINE_VIDEO_DIR", str(workspace / "task_clips"))
    docs = utils.build_video_docs(datasets.Dataset.from_list([{"kind": "video", "count": 3, "seed": 0}]))
    assert len(docs) == 3 and docs[0]["answer"] == video.video_sample(0, 0).answer
    (path,) = utils.doc_to_visual_video(docs[0])
    assert read_clip(path, 64).total == video.FRAMES
