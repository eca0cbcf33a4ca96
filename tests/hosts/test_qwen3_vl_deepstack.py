"""Qwen3-VL DeepStack: the visual features added after the first decoder layers are cut with the
same kept tokens as the main visual features, and added where those tokens sit.

The reference runs the stock language model by hand on the shortened prompt: main features and
every DeepStack layer's features taken at the tokens the stats say were kept (a merged token: the
mean over the patches the stats say it holds), the visual mask from the short prompt's
placeholders, the uncompressed 3-D positions of the kept tokens. Wrong cuts of the same reference
(DeepStack uncut, at other tokens, dropped, or added one position off) must not match: the
comparison is sharp enough to catch each of them.
"""

from __future__ import annotations

import pytest
import torch

import vtcompress as vtc
from tests.conftest import make_image, uncompressed
from tests.helpers.mrope import kept_token_mask
from vtcompress.integrations.qwen3_vl.host import cut_like
from vtcompress.tokens import ViewOutput

torch.set_num_threads(1)
METHODS = ["random", "uniform", "pitome", "tome"]
RATIO = 0.3


@pytest.fixture(scope="module")
def tiny():
    from vtcompress.integrations.qwen3_vl.tiny import build_tiny_qwen3_vl

    return build_tiny_qwen3_vl(seed=0)


@pytest.fixture
def model(tiny):
    yield from uncompressed(tiny[0])


def batch(processor):
    """Three images of different grids in two prompts of different lengths (left padding)."""
    from vtcompress.integrations.qwen3_vl.prompt import prompt

    images = [make_image(500, 300, 0), make_image(300, 900, 1), make_image(420, 420, 2)]
    texts = [prompt("What is it?", 1), prompt("Where are the red shapes in these two pictures?", 2)]
    return dict(processor(images=images, text=texts, return_tensors="pt", padding=True))


def kept_cuts(model, call, stats) -> list[ViewOutput]:
    """Per image, its kept tokens as the stats report them, in raster order: positions (raster
    indices) and, for merged tokens, the raster indices of their source patches."""
    cuts = []
    for image, thw in zip(stats.images, call["image_grid_thw"].tolist()):
        cols = thw[2] // model.config.vision_config.spatial_merge_size
        view = image.views[0]
        raster = [r * cols + c for r, c in view.positions]
        order = sorted(range(len(raster)), key=raster.__getitem__)
        sources = None
        if view.sources is not None:
            sources = [torch.tensor([r * cols + c for r, c in view.sources[i]]) for i in order]
        cuts.append(ViewOutput(torch.tensor([raster[i] for i in order]), torch.empty(0), sources=sources))
    return cuts


def reference_logits(model, call, stats, wrong: str | None = None) -> list[torch.Tensor]:
    """Per sample, [n, vocab] logits of its n real tokens, computed by hand (``wrong``: a
    deliberately wrong DeepStack cut)."""
    inner = model.model
    encoded = inner.get_image_features(call["pixel_values"], call["image_grid_thw"], return_dict=True)
    cuts = kept_cuts(model, call, stats)
    main = torch.cat([cut_like(f, cut) for f, cut in zip(encoded.pooler_output, cuts)])
    deepstack = [
        torch.cat([cut_like(f, cut) for f, cut in zip(layer, cuts)]) for layer in encoded.deepstack_features
    ]
    if wrong == "uncut":
        deepstack = [torch.cat(layer) for layer in encoded.deepstack_features]
    elif wrong == "first tokens":
        deepstack = [
            torch.cat([f[: len(cut.positions)] for f, cut in zip(layer, cuts)])
            for layer in encoded.deepstack_features
        ]
    positions, _ = inner.get_rope_index(
        call["input_ids"],
        call["mm_token_type_ids"],
        image_grid_thw=call["image_grid_thw"],
        attention_mask=call["attention_mask"],
    )
    keep = kept_token_mask(model, call, stats)
    ids = [call["input_ids"][b, keep[b]] for b in range(keep.shape[0])]
    width = max(len(i) for i in ids)
    pad = model.config.text_config.pad_token_id
    short = torch.full((len(ids), width), pad)
    mask = torch.zeros(len(ids), width, dtype=torch.long)
    short_positions = torch.zeros(3, len(ids), width, dtype=positions.dtype)
    for b, row in enumerate(ids):  # left padding, as the processor pads
        short[b, width - len(row) :], mask[b, width - len(row) :] = row, 1
        short_positions[:, b, width - len(row) :] = positions[:, b, keep[b]]
    visual = short == model.config.image_token_id
    embeds = inner.get_input_embeddings()(short)
    embeds[visual] = main.to(embeds.dtype)
    if wrong == "mask one off":
        visual = visual.roll(1, dims=1)
    hidden = inner.language_model(
        inputs_embeds=embeds,
        attention_mask=mask,
        position_ids=short_positions,
        visual_pos_masks=visual,
        deepstack_visual_embeds=None if wrong == "dropped" else deepstack,
    ).last_hidden_state
    logits = model.lm_head(hidden)
    return [logits[b, width - len(row) :] for b, row in enumerate(ids)]


def real_logits(logits: torch.Tensor, n: int, b: int) -> torch.Tensor:
    return logits[b, logits.shape[1] - n :]


@torch.no_grad()
@pytest.mark.parametrize("method", METHODS)
def test_compressed_forward_equals_the_hand_made_deepstack_reference(model, tiny, method):
    call = batch(tiny[1])
    handle = vtc.compress(model, method, ratio=RATIO)
    logits = model(**call).logits
    stats = handle.last_stats
    assert all(im.tokens_after < im.tokens_before for im in stats.images)
    handle.remove()
    for b, want in enumerate(reference_logits(model, call, stats)):
        torch.testing.assert_close(real_logits(logits, want.shape[0], b), want, atol=1e-5, rtol=1e-5)


@torch.no_grad()
@pytest.mark.parametrize("wrong", ["first tokens", "dropped", "mask one off"])
@pytest.mark.parametrize("method", ["uniform", "tome"])
def test_a_wrong_deepstack_cut_is_detected(model, tiny, method, wrong):
    """The reference above is sharp: each plausible wrong cut changes the logits far beyond its
    tolerance."""
    call = batch(tiny[1])
    handle = vtc.compress(model, method, ratio=RATIO)
    logits = model(**call).logits
    stats = handle.last_stats
    handle.remove()
    diffs = [
        (real_logits(logits, want.shape[0], b) - want).abs().max().item()
        for b, want in enumerate(reference_logits(model, call, stats, wrong))
    ]
    assert max(diffs) > 1e-2, diffs


@torch.no_grad()
def test_uncut_deepstack_cannot_be_added_to_the_short_prompt(model, tiny):
    call = batch(tiny[1])
    handle = vtc.compress(model, "uniform", ratio=RATIO)
    model(**call)
    stats = handle.last_stats
    handle.remove()
    with pytest.raises(RuntimeError):
        reference_logits(model, call, stats, "uncut")


@torch.no_grad()
def test_language_model_gets_deepstack_at_the_kept_tokens(model, tiny):
    """What the decoder receives: one [kept tokens, hidden] tensor per DeepStack layer, the
    visual mask marking exactly the kept placeholders of the short prompt."""
    from tests.helpers.mrope import LanguageModelCalls

    call = batch(tiny[1])
    handle = vtc.compress(model, "uniform", ratio=RATIO)
    spy = LanguageModelCalls(model)
    try:
        model(**call)
    finally:
        spy.close()
    (kwargs,) = spy.kwargs
    kept = handle.last_stats.tokens_after
    layers = len(model.config.vision_config.deepstack_visual_indexes)
    assert [tuple(d.shape) for d in kwargs["deepstack_visual_embeds"]] == [(kept, 64)] * layers
    assert int(kwargs["visual_pos_masks"].sum()) == kept
    short_ids = kwargs["inputs_embeds"].shape[1]
    assert kwargs["visual_pos_masks"].shape == (2, short_ids)


def test_cut_like_takes_rows_or_the_mean_of_sources():
    features = torch.arange(12.0).reshape(6, 2)
    assert torch.equal(
        cut_like(features, ViewOutput(torch.tensor([1, 4]), features[[1, 4]])), features[[1, 4]]
    )
    merged = ViewOutput(
        torch.tensor([0, 2]), torch.empty(0), sources=[torch.tensor([0, 1, 5]), torch.tensor([2])]
    )
    assert torch.equal(cut_like(features, merged), torch.stack([features[[0, 1, 5]].mean(0), features[2]]))
