"""LLaVA-OneVision videos: pooled frames (196 tokens at 384 px) compressed per clip, one newline per
video kept, images and videos in one prompt on their own budgets, generation, ratio 1.0 / remove().

The video tensors are built directly (the video processor needs torchvision):
``pixel_values_videos`` [videos, frames, 3, 384, 384] and a run of ``frames * 196 + 1`` video
placeholders (transformers' processor counts them so: pooled 14x14 per frame, + 1 newline).
"""

from __future__ import annotations

import pytest
import torch

import vtcompress as vtc
from tests.conftest import make_image, uncompressed
from tests.helpers.video_inputs import ONEVISION_PER_FRAME as PER_FRAME
from tests.helpers.video_inputs import onevision_pixels as pixels
from tests.helpers.video_inputs import onevision_text as text
from tests.helpers.video_inputs import onevision_video_inputs as video_inputs
from tests.helpers.video_inputs import tiny_onevision
from vtcompress.video import clip_keep_count

torch.set_num_threads(1)


@pytest.fixture
def model():
    yield from uncompressed(tiny_onevision()[0])


@torch.no_grad()
@pytest.mark.parametrize("method", ["vidcom2", "evs", "uniform"])
def test_a_clip_keeps_its_count_and_its_newline(model, method):
    call = video_inputs(2, ["What happens?"])
    handle = vtc.compress(model, method, ratio=0.25)
    logits = model(**call).logits
    (clip,) = handle.last_stats.images
    want = {"evs": 196}.get(method, clip_keep_count(2, 196, 0.25))  # EVS keeps frame 0 whole
    assert (clip.media, clip.tokens_before, clip.tokens_after) == ("video", 392, want)
    assert (clip.newlines_before, clip.newlines_after) == (1, 1)
    assert [v.original for v in clip.views] == [196, 196]
    assert logits.shape[1] == call["input_ids"].shape[1] - (392 - want)


@torch.no_grad()
def test_the_language_model_gets_the_kept_frame_tokens_then_the_newline(model):
    call = video_inputs(2, ["What happens?"])
    stock = model.model.get_video_features(call["pixel_values_videos"], return_dict=True).pooler_output[0]
    handle = vtc.compress(model, "vidcom2", ratio=0.25)
    seen = {}

    def grab(module, args, kwargs):
        seen["embeds"] = kwargs["inputs_embeds"].clone()

    hook = model.model.language_model.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        model(**call)
    finally:
        hook.remove()
    clip = handle.last_stats.images[0]
    kept = [t * PER_FRAME + r * 14 + c for t, v in enumerate(clip.views) for r, c in v.positions] + [392]
    ids = call["input_ids"][0]
    start = int((ids == model.config.video_token_id).nonzero()[0])
    run = seen["embeds"][0, start : start + len(kept)]
    torch.testing.assert_close(run, stock[kept], rtol=0, atol=0)


@torch.no_grad()
def test_ratio_one_and_remove_are_bit_identical(model):
    call = video_inputs(2, ["What happens?", "Who moves first?"])
    stock = model(**call).logits
    with vtc.compressed(model, "vidcom2", ratio=1.0):
        assert torch.equal(model(**call).logits, stock)
    handle = vtc.compress(model, "vidcom2", ratio=0.25)
    assert model(**call).logits.shape[1] < stock.shape[1]
    handle.remove()
    assert torch.equal(model(**call).logits, stock)


@torch.no_grad()
def test_batch_equals_one_by_one_and_greedy_generate_equals_a_forward_loop(model):
    questions = ["What happens?", "Who moves first in the clip?"]
    videos = pixels(2, 2, seed=3)
    call = video_inputs(2, questions, videos=videos)
    handle = vtc.compress(model, "vidcom2", ratio=0.25)
    out = model.generate(**call, max_new_tokens=2, do_sample=False)
    kept = [[v.positions for v in s.views] for s in handle.last_stats.images]
    step = dict(call)
    for _ in range(2):
        nxt = model(**step).logits[:, -1].argmax(-1, keepdim=True)
        step["input_ids"] = torch.cat([step["input_ids"], nxt], 1)
        step["attention_mask"] = torch.cat([step["attention_mask"], torch.ones_like(nxt)], 1)
    assert torch.equal(out, step["input_ids"])
    for b, q in enumerate(questions):
        one = video_inputs(2, [q], videos=videos[b : b + 1])
        alone = model.generate(**one, max_new_tokens=2, do_sample=False)
        assert [v.positions for v in handle.last_stats.images[0].views] == kept[b]
        assert torch.equal(out[b, -alone.shape[1] :], alone[0])


@torch.no_grad()
@pytest.mark.parametrize(
    "mode",
    [dict(do_sample=True, top_k=5), dict(num_beams=2, num_return_sequences=2, do_sample=False)],
    ids=["sampling", "beams-returns"],
)
def test_sampling_and_beams_return_the_callers_prompt(model, mode):
    call = video_inputs(2, ["What happens?", "Who moves first?"])
    vtc.compress(model, "evs", ratio=0.25)
    torch.manual_seed(0)
    out = model.generate(**call, max_new_tokens=2, **mode)
    n = mode.get("num_return_sequences", 1)
    assert out.shape == (2 * n, call["input_ids"].shape[1] + 2)
    assert torch.equal(out[:, : call["input_ids"].shape[1]], call["input_ids"].repeat_interleave(n, 0))


@torch.no_grad()
def test_image_and_video_in_one_prompt_each_get_their_own_budget(model):
    processor = tiny_onevision()[1]
    videos = pixels(1, 2)
    tok = processor.tokenizer
    run = text(2, "What changes?", image=True)
    # the processor expands <image>; the video run is already written out, so it gets no videos
    image_part, video_part = run.split("\n", 2)[0] + "\n<image>\n", run.split("<image>\n", 1)[1]
    call = dict(processor(images=[make_image(500, 300)], text=[image_part], return_tensors="pt"))
    tail = tok(video_part, return_tensors="pt", add_special_tokens=False)["input_ids"]
    call["input_ids"] = torch.cat([call["input_ids"], tail], 1)
    call["attention_mask"] = torch.ones_like(call["input_ids"])
    call["pixel_values_videos"] = videos
    handle = vtc.compress(model, "uniform", ratio=0.25)
    logits = model(**call).logits
    image, clip = handle.last_stats.images
    assert image.media == "image" and image.tokens_after == image.tokens_before // 4
    assert (clip.media, clip.tokens_before, clip.tokens_after) == ("video", 392, 98)
    cut = (image.tokens_before + image.newlines_before - image.tokens_after - image.newlines_after) + (
        392 - 98
    )
    assert logits.shape[1] == call["input_ids"].shape[1] - cut
    handle.remove()
    with vtc.compressed(model, "vidcom2", ratio=0.25):
        with pytest.raises(ValueError, match="compresses videos only and this call has images"):
            model(**call)
