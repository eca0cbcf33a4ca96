"""``tokencorr`` end to end on the tiny offline LLaVA-NeXT (random weights, real geometry)."""

from __future__ import annotations

import math

import torch

import vtcompress
from tests.conftest import IMAGE_SIZES, logits, make_image, prompt
from tests.helpers.tokencorr import blank_page, text_page
from vtcompress.budget import keep_count
from vtcompress.integrations.llava_next.layout import AnyResLayout
from vtcompress.integrations.llava_next.tiny import PINPOINTS
from vtcompress.methods.tokencorr import TokenCorrConfig


def inputs_for(processor, images, questions=None):
    texts = [prompt(q) for q in (questions or ["What is written here?"] * len(images))]
    return processor(images=images, text=texts, return_tensors="pt", padding=True)


def test_ratio_one_is_bit_identical(model, processor):
    inputs = inputs_for(
        processor, [make_image(*IMAGE_SIZES["letterbox_wide"]), make_image(*IMAGE_SIZES["tall"])]
    )
    reference = logits(model, inputs)
    for cfg in (TokenCorrConfig(ratio=1.0), TokenCorrConfig(ratio=1.0, allocation="exact")):
        with vtcompress.compressed(model, cfg):
            assert torch.equal(logits(model, inputs), reference)


def test_counts_stats_and_sequence_length(model, processor):
    w, h = IMAGE_SIZES["letterbox_tall"]
    layout = AnyResLayout.for_image((h, w), PINPOINTS)
    inputs = inputs_for(processor, [make_image(w, h)])
    handle = vtcompress.compress(model, "tokencorr", allocation="adaptive", ratio=0.5)
    out = logits(model, inputs)
    stats = handle.last_stats.images[0]
    assert stats.tokens_before == layout.num_tokens()
    assert stats.newlines_after == layout.num_newlines("unpadded")  # one newline per kept row
    assert stats.views[0].kept == 576 and stats.views[0].info["compressed"] is False
    for view in stats.views[1:]:
        info = view.info
        assert info["compressed"] and info["tokens"] == view.original
        assert view.kept == min(
            view.original, max(1, math.ceil(info["density"] * view.original * 0.5 - 1e-9))
        )
        assert info["kept"] == view.kept == len(set(view.positions))
        assert len(info["global"]) + len(info["sampled"]) == view.kept
    assert stats.tokens_after == sum(v.kept for v in stats.views)
    assert stats.tokens_after <= 576 + keep_count(layout.num_tokens() - 576, 0.5) + layout.rows * layout.cols
    assert out.shape[1] == inputs["input_ids"].shape[1] - (stats.tokens_before - stats.tokens_after)


def test_paper_scale_compresses_at_ratio_one(model, processor):
    handle = vtcompress.compress(model, TokenCorrConfig.paper())
    logits(model, inputs_for(processor, [blank_page(672)]))
    stats = handle.last_stats.images[0]
    assert stats.tokens_after < stats.tokens_before
    for view in stats.views[1:]:
        info = view.info
        # n_c = ceil(rho N) local draws over all patches, united with every IQR outlier
        assert info["budget"] == max(1, math.ceil(info["density"] * view.original - 1e-9))
        assert view.kept == len(info["global"]) + len(info["sampled"])
        assert info["budget"] <= view.kept <= info["budget"] + len(info["global"])


def test_exact_budget_total(model, processor):
    w, h = IMAGE_SIZES["wide"]
    layout = AnyResLayout.for_image((h, w), PINPOINTS)
    handle = vtcompress.compress(model, "tokencorr", ratio=0.3, allocation="exact")
    logits(model, inputs_for(processor, [make_image(w, h)]))
    stats = handle.last_stats.images[0]
    assert stats.tokens_after == keep_count(layout.num_tokens(), 0.3)  # the package-wide rule


def test_text_page_keeps_more_than_blank_page(model, processor):
    handle = vtcompress.compress(model, "tokencorr", allocation="adaptive", ratio=0.5)
    logits(model, inputs_for(processor, [blank_page(672), text_page(672, font_size=14)]))
    blank, text = handle.last_stats.images
    crops_blank = sum(v.kept for v in blank.views[1:])
    crops_text = sum(v.kept for v in text.views[1:])
    assert crops_blank < crops_text
    assert max(v.info["density"] for v in blank.views[1:]) < min(v.info["density"] for v in text.views[1:])


def test_batch_equals_one_by_one(model, processor):
    images = [
        make_image(*IMAGE_SIZES["letterbox_wide"], seed=0),
        text_page(672),
        make_image(*IMAGE_SIZES["tall"]),
    ]
    questions = ["What?", "Read the second line of the page.", "Count the shapes."]
    handle = vtcompress.compress(model, "tokencorr", allocation="adaptive", ratio=0.4)
    batched = logits(model, inputs_for(processor, images, questions))[:, -1]
    kept = [im.tokens_after for im in handle.last_stats.images]
    for i, (image, q) in enumerate(zip(images, questions)):
        alone = logits(model, inputs_for(processor, [image], [q]))[:, -1]
        assert handle.last_stats.images[0].tokens_after == kept[i]
        assert torch.allclose(batched[i], alone[0], atol=1e-4), i


def test_generate_runs_and_keeps_the_prompt(model, processor):
    vtcompress.compress(model, "tokencorr", allocation="adaptive", ratio=0.3, sampling="topk")
    inputs = inputs_for(processor, [text_page(500)])
    out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert out.shape == (1, inputs["input_ids"].shape[1] + 3)
    assert torch.equal(out[:, : inputs["input_ids"].shape[1]], inputs["input_ids"])
