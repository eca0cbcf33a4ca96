"""Qwen3-VL videos: clips are compressed (ratio over all of a clip's tokens, temporal patches as
frames), the timestamps and vision markers between a clip's frame runs stay, kept tokens keep
their (t, h, w) rotary positions and their DeepStack features, images and videos in one prompt
each get their own budget, batches of clips of different lengths, every generation mode, ratio
1.0 and remove().

The video tensors are built directly (the video processor needs torchvision): ``video_grid_thw``
rows (t, h, w) in 16 px patches, ``pixel_values_videos`` [t*h*w, 3*2*16*16] and, per temporal
patch, ``<x.x seconds><|vision_start|>`` + h*w/4 video placeholders + ``<|vision_end|>``.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

import vtcompress as vtc
from tests.conftest import make_image, tiny_qwen3_vl, uncompressed
from tests.helpers.video_inputs import qwen3_clip_text
from tests.helpers.video_inputs import qwen3_video_inputs as video_inputs
from vtcompress.config import CompressionConfig
from vtcompress.methods.vidcom2 import vidcom2_keep
from vtcompress.registry import _METHODS, register_method
from vtcompress.tokens import ViewOutput

torch.set_num_threads(1)
VIDEO_METHODS = ["vidcom2", "evs", "dycoke_ttm", "visionzip_video"]
FRAME_METHODS = {"uniform": {}, "random": {}, "tome": {"metric": "projected"}}


@pytest.fixture
def model():
    yield from uncompressed(tiny_qwen3_vl()[0])


class Spy:
    """What the inner model and its language model receive (input ids; positions, embeddings,
    visual positions and DeepStack features)."""

    def __init__(self, model):
        self.ids: list[torch.Tensor] = []
        self.lm: list[dict] = []
        self.hooks = [
            model.model.register_forward_pre_hook(self.grab_ids, with_kwargs=True),
            model.model.language_model.register_forward_pre_hook(self.grab_lm, with_kwargs=True),
        ]

    def grab_ids(self, module, args, kwargs):
        self.ids.append(kwargs["input_ids"].clone())

    def grab_lm(self, module, args, kwargs):
        keys = ("position_ids", "inputs_embeds", "visual_pos_masks", "deepstack_visual_embeds")
        self.lm.append({k: kwargs[k] for k in keys})

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for hook in self.hooks:
            hook.remove()


def reference_positions(ids: list[int], media: dict[int, list[tuple[int, int]]]) -> list[list[int]]:
    """(t, h, w) of every token of an unpadded prompt, by Qwen3-VL's documented rule: text steps
    all three by one; a run of one image or one temporal patch of a (rows x cols) token grid
    starting at p gives (p, p + row, p + col) and moves p on by max(rows, cols). ``media``: per
    placeholder id, the grids of its runs in order."""
    grids = {token: iter(runs) for token, runs in media.items()}
    out, pos, i = [], 0, 0
    while i < len(ids):
        if ids[i] in grids:
            rows, cols = next(grids[ids[i]])
            out += [[pos, pos + k // cols, pos + k % cols] for k in range(rows * cols)]
            pos, i = pos + max(rows, cols), i + rows * cols
        else:
            out.append([pos] * 3)
            pos, i = pos + 1, i + 1
    return out


def kept_ranks(clip_stats) -> list[int]:
    """The kept tokens' ranks among the clip's video placeholders (frame-major), from the stats."""
    per_frame = clip_stats.views[0].original
    cols = clip_stats.image_size[1] // 32
    return [t * per_frame + r * cols + c for t, v in enumerate(clip_stats.views) for r, c in v.positions]


def stock_video_features(model, call):
    out = model.model.get_video_features(
        call["pixel_values_videos"], call["video_grid_thw"], return_dict=True
    )
    return out.pooler_output, out.deepstack_features


@torch.no_grad()
@pytest.mark.parametrize("method", VIDEO_METHODS + sorted(FRAME_METHODS))
def test_a_clip_keeps_its_methods_count_and_reports_frames(model, method):
    grid = (4, 4, 6)  # 4 temporal patches of 2x3 = 6 tokens: 24 tokens
    call = video_inputs([grid])
    handle = vtc.compress(model, method, ratio=0.5, **FRAME_METHODS.get(method, {}))
    with Spy(model) as spy:
        logits = model(**call).logits
    (clip,) = handle.last_stats.images
    assert clip.media == "video" and clip.grid == (4, 1) and clip.tokens_before == 24
    assert [v.name for v in clip.views] == [f"frame {t}" for t in range(4)]
    assert [v.original for v in clip.views] == [6] * 4
    assert sum(v.kept for v in clip.views) == clip.tokens_after
    if method in ("vidcom2", "visionzip_video", *FRAME_METHODS):  # the exact budget: floor(0.5 * 24)
        assert clip.tokens_after == 12
    assert logits.shape[1] == call["input_ids"].shape[1] - (24 - clip.tokens_after)
    # Only video placeholders go: every timestamp and marker stays.
    (ids,) = spy.ids
    video_id = model.config.video_token_id
    assert int((ids == video_id).sum()) == clip.tokens_after
    assert torch.equal(ids[ids != video_id], call["input_ids"][call["input_ids"] != video_id])
    assert "4 temporal patches of 2 frames, 6 tokens each" in handle.last_stats.summary()


@torch.no_grad()
@pytest.mark.parametrize("method", ["vidcom2", "evs", "uniform", "tome"])
def test_kept_tokens_keep_their_positions_features_and_deepstack(model, method):
    grid = (3, 4, 6)  # 3 runs of 2 x 3 tokens, a timestamp before each
    call = video_inputs([grid], seconds=1.5)
    features, deepstack = stock_video_features(model, call)
    handle = vtc.compress(model, method, ratio=0.4, **FRAME_METHODS.get(method, {}))
    with Spy(model) as spy:
        model(**call)
    (got,) = spy.lm
    (clip,) = handle.last_stats.images
    kept = kept_ranks(clip)
    ids = call["input_ids"][0]
    is_video = ids == model.config.video_token_id
    stays = ~is_video
    stays[is_video.nonzero()[kept, 0]] = True
    want = torch.tensor(reference_positions(ids.tolist(), {model.config.video_token_id: [(2, 3)] * 3}))
    assert got["position_ids"][-3:, 0].T.tolist() == want[stays].tolist()
    run = got["visual_pos_masks"][0]
    assert int(run.sum()) == len(kept) == clip.tokens_after
    if method != "tome":  # pruning: each kept token's own features, main and DeepStack
        torch.testing.assert_close(got["inputs_embeds"][0, run], features[0][kept], rtol=0, atol=0)
        for layer, stock in zip(got["deepstack_visual_embeds"], deepstack, strict=True):
            torch.testing.assert_close(layer, stock[0][kept], rtol=0, atol=0)
    else:  # merging: a merged token's DeepStack features are the mean of its sources'
        p, cols = clip.views[0].original, clip.image_size[1] // 32
        tokens = sorted(  # (rank of the token's placeholder, its sources' ranks), placeholder order
            (t * p + r * cols + c, [t * p + sr * cols + sc for sr, sc in src])
            for t, v in enumerate(clip.views)
            for (r, c), src in zip(v.positions, v.sources)
        )
        assert [rank for rank, _ in tokens] == kept and any(len(src) > 1 for _, src in tokens)
        sources = [src for _, src in tokens]
        for layer, stock in zip(got["deepstack_visual_embeds"], deepstack, strict=True):
            want_ds = torch.stack([stock[0][s].mean(0) for s in sources])
            torch.testing.assert_close(layer, want_ds, rtol=1e-6, atol=1e-6)


@dataclass
class BackwardsConfig(CompressionConfig):
    """A test video method: per frame the odd positions, listed last first."""

    media = ("video",)


def backwards(clip, config) -> list[ViewOutput]:
    p = clip.features.shape[1]
    kept = torch.arange(p - 1, 0, -2)  # descending
    return [ViewOutput(positions=kept, features=frame[kept]) for frame in clip.features]


@torch.no_grad()
def test_a_method_that_lists_kept_tokens_out_of_order_is_spliced_in_placeholder_order(model):
    call = video_inputs([(3, 4, 6)])
    features, deepstack = stock_video_features(model, call)
    register_method("_backwards", BackwardsConfig)(backwards)
    try:
        vtc.compress(model, BackwardsConfig(ratio=0.5))
        with Spy(model) as spy:
            model(**call)
    finally:
        vtc.get_handle(model).remove()
        _METHODS.pop("_backwards", None)
    (got,) = spy.lm
    kept = [t * 6 + i for t in range(3) for i in (1, 3, 5)]
    torch.testing.assert_close(
        got["inputs_embeds"][0, got["visual_pos_masks"][0]], features[0][kept], rtol=0, atol=0
    )
    for layer, stock in zip(got["deepstack_visual_embeds"], deepstack, strict=True):
        torch.testing.assert_close(layer, stock[0][kept], rtol=0, atol=0)


@torch.no_grad()
def test_vidcom2_runs_on_temporal_patches_as_the_official_hook(model):
    """T = temporal patches, tokens per frame = h * w / 4, the merged tokens of the clip: the kept
    tokens are those VidCom² picks on exactly that [T, P, D] tensor (paper and exact modes)."""
    grid = (4, 4, 6)
    call = video_inputs([grid])
    frames = stock_video_features(model, call)[0][0].view(4, 6, -1)
    for allocation in ("paper", "exact"):
        handle = vtc.compress(model, "vidcom2", ratio=0.3, allocation=allocation)
        model(**call)
        (clip,) = handle.last_stats.images
        want = vidcom2_keep(frames, 0.3, allocation)
        assert [[r * 3 + c for r, c in v.positions] for v in clip.views] == [w.tolist() for w in want]
        handle.remove()


@torch.no_grad()
def test_a_frame_with_no_kept_token_keeps_its_timestamp_and_markers(model):
    call = video_inputs([(3, 4, 6)])
    handle = vtc.compress(model, "evs", ratio=0.3)  # frame 0 whole (6 of 5 allowed): later frames empty
    with Spy(model) as spy:
        model(**call)
    (clip,) = handle.last_stats.images
    assert [v.kept for v in clip.views] == [6, 0, 0]
    (ids,) = spy.ids
    text = tiny_qwen3_vl()[1].tokenizer.decode(ids[0])
    assert "<2.5 seconds><|vision_start|><|vision_end|><4.5 seconds><|vision_start|><|vision_end|>" in text


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
    assert [s[0] for s in batch_stats] == [24, 8, 18]
    logits = model(**call).logits
    for b, (grid, question) in enumerate(zip(grids, questions)):
        one = video_inputs([grid], [question], seeds=[b])
        alone = model.generate(**one, max_new_tokens=3, do_sample=False)
        (s,) = handle.last_stats.images
        assert (s.tokens_before, s.tokens_after, [v.positions for v in s.views]) == batch_stats[b]
        assert torch.equal(batched[b, -alone.shape[1] :], alone[0])
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


def image_and_video_inputs(grid, width=500, height=300, video_first=False):
    """One prompt: an image (expanded by the processor) and a clip's timestamped runs spliced in
    after it, or before it (the processor refuses video placeholders without its video processor)."""
    from vtcompress.integrations.qwen3_vl.prompt import prompt

    m, processor = tiny_qwen3_vl()
    call = dict(
        processor(images=[make_image(width, height)], text=[prompt("What changes?")], return_tensors="pt")
    )
    clip = processor.tokenizer([qwen3_clip_text(grid)], return_tensors="pt")["input_ids"][0]
    if video_first:
        at = int((call["input_ids"][0] == m.config.vision_start_token_id).nonzero()[0])
    else:
        at = int((call["input_ids"][0] == m.config.vision_end_token_id).nonzero()[0]) + 1
    for key, insert in (
        ("input_ids", clip),
        ("attention_mask", torch.ones_like(clip)),
        ("mm_token_type_ids", (clip == m.config.video_token_id).long() * 2),
    ):
        row = call[key][0]
        call[key] = torch.cat([row[:at], insert.to(row.dtype), row[at:]])[None]
    t, h, w = grid
    call["pixel_values_videos"] = torch.randn(
        t * h * w, 3 * 2 * 16 * 16, generator=torch.Generator().manual_seed(5)
    )
    call["video_grid_thw"] = torch.tensor([grid])
    return call


@torch.no_grad()
@pytest.mark.parametrize("video_first", [False, True], ids=["image-then-video", "video-then-image"])
def test_image_and_video_in_one_prompt_each_get_their_own_budget_positions_and_deepstack(model, video_first):
    grid = (4, 4, 6)
    call = image_and_video_inputs(
        grid, video_first=video_first
    )  # image 500x300: 144 tokens (9 x 16); clip: 24
    stock = model(**call).logits
    image_out = model.model.get_image_features(call["pixel_values"], call["image_grid_thw"], return_dict=True)
    _, video_deepstack = stock_video_features(model, call)
    handle = vtc.compress(model, "uniform", ratio=0.3)
    with Spy(model) as spy:
        logits = model(**call).logits
    image, clip = handle.last_stats.images
    assert (image.media, image.tokens_before, image.tokens_after) == ("image", 144, 43)
    assert (clip.media, clip.tokens_before, clip.tokens_after) == ("video", 24, 7)
    assert logits.shape[1] == call["input_ids"].shape[1] - (144 - 43) - (24 - 7)
    # The stock code joins both media's DeepStack features in placeholder order.
    (got,) = spy.lm
    image_kept = [r * 16 + c for r, c in image.views[0].positions]
    for layer, img, vid in zip(got["deepstack_visual_embeds"], image_out.deepstack_features, video_deepstack):
        parts = [img[0][image_kept], vid[0][kept_ranks(clip)]]
        torch.testing.assert_close(layer, torch.cat(parts[::-1] if video_first else parts), rtol=0, atol=0)
    # Every kept token and all text keep the uncompressed prompt's positions.
    ids = call["input_ids"][0]
    media = {model.config.image_token_id: [(9, 16)], model.config.video_token_id: [(2, 3)] * 4}
    want = torch.tensor(reference_positions(ids.tolist(), media))
    stays = torch.ones_like(ids, dtype=torch.bool)
    for token, kept in (
        (model.config.image_token_id, image_kept),
        (model.config.video_token_id, kept_ranks(clip)),
    ):
        at = (ids == token).nonzero()[:, 0]
        stays[at] = False
        stays[at[kept]] = True
    assert got["position_ids"][-3:, 0].T.tolist() == want[stays].tolist()
    with vtc.compressed(model, "uniform", ratio=1.0):
        assert torch.equal(model(**call).logits, stock)
    handle.remove()
    assert torch.equal(model(**call).logits, stock)


@torch.no_grad()
def test_a_video_method_refuses_images_in_the_call(model):
    vtc.compress(model, "vidcom2", ratio=0.3)
    with pytest.raises(ValueError, match="compresses videos only and this call has images"):
        model(**image_and_video_inputs((2, 4, 4)))


@torch.no_grad()
def test_missing_video_grid_is_one_line(model):
    call = video_inputs([(2, 4, 4)])
    del call["video_grid_thw"]
    vtc.compress(model, "vidcom2", ratio=0.3)
    with pytest.raises(ValueError, match="needs video_grid_thw"):
        model(**call)
