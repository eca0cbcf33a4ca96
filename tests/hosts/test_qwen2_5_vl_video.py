"""Qwen2.5-VL videos: clips are compressed (ratio over all of a clip's tokens), kept tokens keep their
(t, h, w) rotary positions with the clip's time step, images and videos in one prompt each get their
own budget, batches of clips of different lengths, every generation mode, ratio 1.0 and remove().

The video tensors are built directly (the video processor needs torchvision): ``video_grid_thw``
rows (t, h, w) in 14 px patches, ``pixel_values_videos`` [t*h*w, 3*2*14*14] and one run of
``t*h*w/4`` video placeholders in the prompt.
"""

from __future__ import annotations

import pytest
import torch

import vtcompress as vtc
from tests.conftest import make_image, tiny_qwen2_5_vl, uncompressed
from tests.helpers.video_inputs import qwen_clip_pixels as clip_pixels
from tests.helpers.video_inputs import qwen_video_inputs as video_inputs
from vtcompress.integrations.qwen2_5_vl.tiny import VIDEO_TOKEN, VISION_END, VISION_START
from vtcompress.video import clip_keep_count

torch.set_num_threads(1)
TOKENS_PER_SECOND = 2  # the tiny model's vision config
VIDEO_METHODS = ["vidcom2", "evs", "dycoke_ttm", "visionzip_video"]
FRAME_METHODS = {
    "uniform": {},
    "random": {},
    "pitome": {"metric": "projected"},
    "tome": {"metric": "projected"},
}


@pytest.fixture
def model():
    yield from uncompressed(tiny_qwen2_5_vl()[0])


def image_and_video_inputs(grid, width=500, height=300):
    """One prompt: an image (expanded by the processor), then a clip's run spliced in after it."""
    from vtcompress.integrations.qwen2_5_vl.prompt import prompt

    m, processor = tiny_qwen2_5_vl()
    call = dict(
        processor(images=[make_image(width, height)], text=[prompt("What changes?")], return_tensors="pt")
    )
    tok = processor.tokenizer
    run = torch.tensor(
        [
            tok.convert_tokens_to_ids(t)
            for t in [VISION_START] + [VIDEO_TOKEN] * (grid[0] * grid[1] * grid[2] // 4) + [VISION_END]
        ]
    )
    at = int((call["input_ids"][0] == tok.convert_tokens_to_ids(VISION_END)).nonzero()[0]) + 1
    types = (run == m.config.video_token_id).long() * 2
    for key, insert in (
        ("input_ids", run),
        ("attention_mask", torch.ones_like(run)),
        ("mm_token_type_ids", types),
    ):
        row = call[key][0]
        call[key] = torch.cat([row[:at], insert.to(row.dtype), row[at:]])[None]
    call.update(
        pixel_values_videos=clip_pixels(grid, 5),
        video_grid_thw=torch.tensor([grid]),
        second_per_grid_ts=torch.tensor([1.0]),
    )
    return call


class LanguageModelCalls:
    def __init__(self, model):
        self.calls: list[dict] = []
        self.handle = model.model.language_model.register_forward_pre_hook(self.grab, with_kwargs=True)

    def grab(self, module, args, kwargs):
        self.calls.append({k: kwargs[k].clone() for k in ("position_ids", "inputs_embeds")})

    def close(self):
        self.handle.remove()


def kept_run_indices(clip_stats) -> list[int]:
    """Indices into the clip's placeholder run of the kept tokens (frame-major), from the stats."""
    per_frame = clip_stats.views[0].original
    cols = clip_stats.image_size[1] // 28
    return [t * per_frame + r * cols + c for t, v in enumerate(clip_stats.views) for r, c in v.positions]


@torch.no_grad()
@pytest.mark.parametrize("method", VIDEO_METHODS + sorted(FRAME_METHODS))
def test_a_clip_keeps_its_methods_count_and_reports_frames(model, method):
    grid = (4, 4, 6)  # 4 temporal patches of 2x3 = 6 tokens: 24 tokens
    call = video_inputs([grid])
    handle = vtc.compress(model, method, ratio=0.5, **FRAME_METHODS.get(method, {}))
    logits = model(**call).logits
    (clip,) = handle.last_stats.images
    assert clip.media == "video" and clip.grid == (4, 1) and clip.tokens_before == 24
    assert [v.name for v in clip.views] == [f"frame {t}" for t in range(4)]
    assert [v.original for v in clip.views] == [6] * 4
    assert sum(v.kept for v in clip.views) == clip.tokens_after
    want = {"evs": 12, "dycoke_ttm": 6 + 3 + 6 + 3, "visionzip_video": 12}.get(
        method, clip_keep_count(4, 6, 0.5)
    )
    assert clip.tokens_after == want
    assert logits.shape[1] == call["input_ids"].shape[1] - (24 - want)
    assert handle.last_stats.summary().startswith(f"video 0: 24 -> {want} visual tokens")


@torch.no_grad()
@pytest.mark.parametrize("method", ["vidcom2", "evs", "uniform"])
def test_kept_tokens_keep_their_positions_and_features(model, method):
    # 1.5 s per temporal patch: the t position steps by 2 * 1.5 = 3.
    grid, seconds = (3, 4, 4), 1.5
    call = video_inputs([grid], seconds=[seconds])
    stock_features = model.model.get_video_features(
        call["pixel_values_videos"], call["video_grid_thw"], return_dict=True
    ).pooler_output[0]
    handle = vtc.compress(model, method, ratio=0.4)
    spy = LanguageModelCalls(model)
    try:
        model(**call)
    finally:
        spy.close()
    (got,) = spy.calls
    clip = handle.last_stats.images[0]
    kept = kept_run_indices(clip)
    ids = call["input_ids"][0]
    start = int((ids == model.config.video_token_id).nonzero()[0])  # text before the run: 0 .. start-1
    # Expected positions, from the model's documented rule: t * 2 tokens/s * 1.5 s, then row, col.
    step = int(TOKENS_PER_SECOND * seconds)  # 3
    want = [[start + (k // 4) * step, start + (k % 4) // 2, start + k % 2] for k in kept]
    positions = got["position_ids"][:, 0]  # [3, L']
    run = slice(start, start + len(kept))
    assert positions[:, run].T.tolist() == want
    # Text after the clip keeps the stock model's own positions. transformers 5.24 continues at
    # start + max(h', w') = start + 2, below the clip's largest t position (start + 6); the
    # original Qwen code and vLLM's unpruned rule continue at that maximum + 1 instead.
    stock, _ = model.model.get_rope_index(
        call["input_ids"],
        call["mm_token_type_ids"],
        video_grid_thw=call["video_grid_thw"],
        second_per_grid_ts=call["second_per_grid_ts"],
        attention_mask=call["attention_mask"],
    )
    after = start + 12  # 3 x 2 x 2 placeholders
    assert stock[:, 0, after].tolist() == [start + 2] * 3
    assert torch.equal(positions[:, start + len(kept) :], stock[:, 0, after:])
    # the language model got the kept tokens' own features, in order
    torch.testing.assert_close(got["inputs_embeds"][0, run], stock_features[kept], rtol=0, atol=0)


@torch.no_grad()
@pytest.mark.parametrize("method", ["vidcom2", "uniform"])
def test_ratio_one_and_remove_are_bit_identical(model, method):
    call = video_inputs([(3, 4, 6), (2, 4, 4)])
    stock = model(**call).logits
    stock_gen = model.generate(**call, max_new_tokens=3, do_sample=False)
    with vtc.compressed(model, method, ratio=1.0):
        assert torch.equal(model(**call).logits, stock)
        assert torch.equal(model.generate(**call, max_new_tokens=3, do_sample=False), stock_gen)
    handle = vtc.compress(model, method, ratio=0.3)
    assert model(**call).logits.shape[1] < stock.shape[1]
    handle.remove()
    assert torch.equal(model(**call).logits, stock)


@torch.no_grad()
@pytest.mark.parametrize("method", ["vidcom2", "evs", "uniform"])
def test_batch_of_clips_of_different_lengths_equals_one_by_one(model, method):
    grids = [(4, 4, 6), (2, 4, 4), (3, 6, 4)]
    questions = ["What happens?", "Who moves first in the clip?", "Why?"]
    call = video_inputs(grids, questions)
    handle = vtc.compress(model, method, ratio=0.3)
    batched = model.generate(**call, max_new_tokens=3, do_sample=False)
    batch_stats = [
        (s.tokens_before, s.tokens_after, [v.positions for v in s.views]) for s in handle.last_stats.images
    ]
    logits = model(**call).logits
    for b, (grid, question) in enumerate(zip(grids, questions)):
        one = video_inputs([grid], [question], seeds=[b])
        alone = model.generate(**one, max_new_tokens=3, do_sample=False)
        (s,) = handle.last_stats.images
        assert (s.tokens_before, s.tokens_after, [v.positions for v in s.views]) == batch_stats[b]
        n = alone.shape[1]
        assert torch.equal(batched[b, -n:], alone[0])
        alone_logits = model(**one).logits[0]
        torch.testing.assert_close(logits[b, -alone_logits.shape[0] :], alone_logits, atol=1e-5, rtol=1e-5)


@torch.no_grad()
@pytest.mark.parametrize(
    "mode",
    [
        dict(do_sample=False),
        dict(do_sample=True, top_k=5),
        dict(num_beams=2, do_sample=False),
        dict(num_beams=2, num_return_sequences=2, do_sample=False),
        dict(do_sample=True, num_return_sequences=2),
    ],
    ids=["greedy", "sampling", "beams", "beams-returns", "sampling-returns"],
)
def test_every_generation_mode(model, mode):
    call = video_inputs([(4, 4, 6), (2, 4, 4)], ["What happens?", "Who moves first?"])
    vtc.compress(model, "vidcom2", ratio=0.3)
    torch.manual_seed(0)
    out = model.generate(**call, max_new_tokens=3, **mode)
    returns = mode.get("num_return_sequences", 1)
    assert out.shape == (2 * returns, call["input_ids"].shape[1] + 3)
    assert torch.equal(out[:, : call["input_ids"].shape[1]], call["input_ids"].repeat_interleave(returns, 0))
    if not mode.get("do_sample") and mode.get("num_beams", 1) == 1:  # greedy = a greedy forward loop
        step = dict(call)
        for _ in range(3):
            nxt = model(**step).logits[:, -1].argmax(-1, keepdim=True)
            step["input_ids"] = torch.cat([step["input_ids"], nxt], 1)
            step["attention_mask"] = torch.cat([step["attention_mask"], torch.ones_like(nxt)], 1)
            step["mm_token_type_ids"] = torch.cat([step["mm_token_type_ids"], torch.zeros_like(nxt)], 1)
        assert torch.equal(out, step["input_ids"])


@torch.no_grad()
def test_image_and_video_in_one_prompt_each_get_their_own_budget(model):
    grid = (4, 4, 6)
    call = image_and_video_inputs(grid)  # image 500x300: 198 tokens; clip: 24
    handle = vtc.compress(model, "uniform", ratio=0.3)
    logits = model(**call).logits
    image, clip = handle.last_stats.images
    assert (image.media, image.tokens_before, image.tokens_after) == ("image", 198, 59)
    assert (clip.media, clip.tokens_before, clip.tokens_after) == ("video", 24, 7)
    assert logits.shape[1] == call["input_ids"].shape[1] - (198 - 59) - (24 - 7)
    with vtc.compressed(model, "uniform", ratio=1.0):
        full = model(**call).logits
    handle.remove()
    assert torch.equal(full, model(**call).logits)


@torch.no_grad()
def test_a_video_method_refuses_images_in_the_call(model):
    vtc.compress(model, "vidcom2", ratio=0.3)
    with pytest.raises(ValueError, match="compresses videos only and this call has images"):
        model(**image_and_video_inputs((2, 4, 4)))


def test_hosts_without_video_refuse_video_methods(tiny):
    llava = tiny[0]  # LLaVA-NeXT: images only
    with pytest.raises(ValueError, match="needs video inputs"):
        vtc.compress(llava, "vidcom2", ratio=0.3)
    assert vtc.get_handle(llava) is None


@torch.no_grad()
def test_missing_video_grid_is_one_line(model):
    call = video_inputs([(2, 4, 4)])
    del call["video_grid_thw"]
    vtc.compress(model, "vidcom2", ratio=0.3)
    with pytest.raises(ValueError, match="needs video_grid_thw"):
        model(**call)


def left_pad_rows(rows: list[dict], pad: int) -> dict:
    """Stack one-row calls into a left-padded batch (input_ids, attention_mask, mm_token_type_ids)."""
    width = max(r["input_ids"].shape[1] for r in rows)
    out = {}
    for key, fill in (("input_ids", pad), ("attention_mask", 0), ("mm_token_type_ids", 0)):
        out[key] = torch.cat(
            [
                torch.cat([torch.full((1, width - r[key].shape[1]), fill, dtype=r[key].dtype), r[key]], 1)
                for r in rows
            ]
        )
    return out


@torch.no_grad()
def test_a_batch_of_a_video_prompt_and_an_image_prompt_equals_one_by_one(model):
    from vtcompress.integrations.qwen2_5_vl.prompt import prompt

    _, processor = tiny_qwen2_5_vl()
    video = video_inputs([(3, 4, 6)], ["What happens in the clip?"])
    image = dict(processor(images=[make_image(500, 300)], text=[prompt("What is it?")], return_tensors="pt"))
    call = left_pad_rows([video, image], model.config.text_config.pad_token_id)
    for key in ("pixel_values_videos", "video_grid_thw", "second_per_grid_ts"):
        call[key] = video[key]
    call["pixel_values"], call["image_grid_thw"] = image["pixel_values"], image["image_grid_thw"]
    handle = vtc.compress(model, "uniform", ratio=0.3)
    out = model.generate(**call, max_new_tokens=2, do_sample=False)
    assert [(s.media, s.tokens_after) for s in handle.last_stats.images] == [
        ("image", 59),
        ("video", 5),
    ]  # 198 and 3 x 6 = 18 tokens
    for b, one in enumerate([video, image]):
        alone = model.generate(**one, max_new_tokens=2, do_sample=False)
        assert torch.equal(out[b, -alone.shape[1] :], alone[0])
