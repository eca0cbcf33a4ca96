"""PiToMe / ToMe on the tiny LLaVA-NeXT: both placements, budgets, exactness, SDPA vs eager."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

import vtcompress
from tests.conftest import IMAGE_SIZES, inputs_for, logits, make_image, prompt
from vtcompress import PiToMeConfig, ToMeConfig
from vtcompress.budget import keep_count
from vtcompress.integrations.llava_next.layout import AnyResLayout
from vtcompress.integrations.llava_next.tiny import PINPOINTS
from vtcompress.merge import paper_token_schedule, tome_plan
from vtcompress.methods.merging import TokenMergingConfig, compress_merging
from vtcompress.registry import _METHODS, register_method

CONFIGS = {
    "pitome-projector": lambda r: PiToMeConfig(ratio=r),
    "pitome-tower": lambda r: PiToMeConfig(ratio=r, placement="tower"),
    "tome-projector": lambda r: ToMeConfig(ratio=r),
    "tome-tower": lambda r: ToMeConfig(ratio=r, placement="tower"),
    "tome-tower-propattn": lambda r: ToMeConfig(ratio=r, placement="tower", proportional_attention=True),
}


def no_hooks_left(model) -> bool:
    for layer in model.model.vision_tower.encoder.layers:
        if "forward" in layer.self_attn.__dict__ or layer._forward_pre_hooks:
            return False
        if any("TowerMerge" in repr(h) for h in layer._forward_hooks.values()):
            return False
    return True


@pytest.mark.parametrize("name", list(CONFIGS))
def test_ratio_one_and_remove_are_bit_identical(model, processor, name):
    inputs = inputs_for(processor, [IMAGE_SIZES["letterbox_wide"], IMAGE_SIZES["square"]])
    reference = logits(model, inputs)
    with vtcompress.compressed(model, CONFIGS[name](1.0)):
        assert torch.equal(logits(model, inputs), reference)
    handle = vtcompress.compress(model, CONFIGS[name](0.25))
    assert logits(model, inputs).shape[1] < reference.shape[1]
    handle.remove()
    handle.remove()
    assert torch.equal(logits(model, inputs), reference)
    assert no_hooks_left(model)


def check_views(stats, layout):
    """Every view's tokens: distinct raster-ordered positions; sources partition its valid patches."""
    valid = [set(range(layout.view_tokens))]
    if layout.has_crops:
        mask = layout.crop_valid_mask()
        valid += [set(mask[j].nonzero().squeeze(1).tolist()) for j in range(mask.shape[0])]
    for view, cells in zip(stats.views, valid):
        flat = [r * layout.side + c for r, c in view.positions]
        assert flat == sorted(set(flat))  # first source, raster order, no duplicates
        assert set(flat) <= cells
        assert sum(view.sizes) == view.original == len(cells)
        # What a demo draws: the patches each token holds.
        sources = [[r * layout.side + c for r, c in src] for src in view.sources]
        assert [len(src) for src in sources] == view.sizes
        assert [min(src) for src in sources] == flat
        assert sorted(p for src in sources for p in src) == sorted(cells)


@pytest.mark.parametrize("name", ["pitome-projector", "tome-projector"])
@pytest.mark.parametrize("shape", ["square", "letterbox_wide", "tall"])
def test_projector_counts_follow_the_exact_budget_rule(model, processor, name, shape):
    w, h = IMAGE_SIZES[shape]
    layout = AnyResLayout.for_image((h, w), PINPOINTS)
    inputs = inputs_for(processor, [(w, h)])
    handle = vtcompress.compress(model, CONFIGS[name](0.2))
    out = logits(model, inputs)
    stats = handle.last_stats.images[0]
    assert stats.tokens_before == layout.num_tokens()
    assert stats.tokens_after == keep_count(layout.num_tokens(), 0.2)
    assert stats.newlines_after == layout.num_newlines("unpadded")
    assert out.shape[1] == inputs["input_ids"].shape[1] - (stats.tokens_before - stats.tokens_after)
    check_views(stats, layout)


@pytest.mark.parametrize("name", ["pitome-tower", "tome-tower"])
@pytest.mark.parametrize("shape", ["square", "letterbox_tall"])
def test_tower_counts_follow_the_per_view_rule(model, processor, name, shape):
    w, h = IMAGE_SIZES[shape]
    layout = AnyResLayout.for_image((h, w), PINPOINTS)
    handle = vtcompress.compress(model, CONFIGS[name](0.3))
    logits(model, inputs_for(processor, [(w, h)]))
    stats = handle.last_stats.images[0]
    k = keep_count(576, 0.3)
    assert handle._host.tower.token_counts == [k]  # one merge layer in the tiny tower
    assert stats.newlines_after == layout.num_newlines("unpadded")
    if shape == "square":  # no letterbox: every merged token holds a valid patch
        assert stats.tokens_after == layout.num_views * k
    else:  # tokens made only of padding are dropped
        assert stats.views[0].kept == k and stats.tokens_after <= layout.num_views * k
    check_views(stats, layout)


def test_paper_mode_keeps_the_official_per_layer_count(model, processor):
    handle = vtcompress.compress(model, PiToMeConfig.paper(layer_ratio=0.9))
    logits(model, inputs_for(processor, [IMAGE_SIZES["square"]]))
    # Tiny tower: one layer before the feature layer, ToMe matching there (l <= 12), [CLS] counted.
    expected = paper_token_schedule(576, 0.9, 1, [True])
    assert handle._host.tower.token_counts == expected == [576 - 57]
    assert handle.last_stats.images[0].tokens_after == 5 * expected[0]


@pytest.mark.parametrize("name", ["pitome-projector", "pitome-tower", "tome-tower-propattn"])
def test_batch_equals_one_by_one(model, processor, name):
    sizes = [IMAGE_SIZES["letterbox_wide"], IMAGE_SIZES["tall"]]
    questions = ["What?", "Where is the red square in this picture?"]
    handle = vtcompress.compress(model, CONFIGS[name](0.25))
    batched = logits(model, inputs_for(processor, sizes, questions))[:, -1]
    batch_stats = handle.last_stats.images
    for i, (size, q) in enumerate(zip(sizes, questions)):
        single = processor(images=[make_image(*size, seed=i)], text=[prompt(q)], return_tensors="pt")
        alone = logits(model, single)[:, -1]
        assert torch.allclose(batched[i], alone[0], atol=1e-4), i
        assert [v.positions for v in handle.last_stats.images[0].views] == [
            v.positions for v in batch_stats[i].views
        ]


@pytest.mark.parametrize("name", ["pitome-tower", "tome-projector"])
def test_generate_works_and_keeps_the_prompt(model, processor, name):
    vtcompress.compress(model, CONFIGS[name](0.25))
    inputs = inputs_for(
        processor, [IMAGE_SIZES["wide"], IMAGE_SIZES["square"]], ["Hi?", "A longer question?"]
    )
    out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert out.shape == (2, inputs["input_ids"].shape[1] + 3)
    assert torch.equal(out[:, : inputs["input_ids"].shape[1]], inputs["input_ids"])
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    for _ in range(3):  # generate equals greedy decoding by repeated compressed forwards
        nxt = logits(model, {**inputs, "input_ids": ids, "attention_mask": mask})[:, -1].argmax(
            -1, keepdim=True
        )
        ids, mask = torch.cat([ids, nxt], 1), torch.cat([mask, torch.ones_like(nxt)], 1)
    assert torch.equal(out, ids)


@dataclass
class FixedMergeConfig(TokenMergingConfig):
    """Merges chosen from the token count alone (ToMe matching on a fixed random metric)."""

    def plan(self, metric, r, layer, num_layers, class_token):
        gen = torch.Generator().manual_seed(metric.shape[1])
        fixed = torch.randn(1, metric.shape[1], 8, generator=gen).expand(metric.shape[0], -1, -1)
        return tome_plan(fixed, r, class_token=class_token)


@pytest.fixture
def fixed_merge():
    register_method("_fixed_merge", FixedMergeConfig)(compress_merging)
    yield FixedMergeConfig
    _METHODS.pop("_fixed_merge", None)


@pytest.mark.parametrize(
    "options",
    [
        dict(placement="projector"),
        dict(placement="tower"),
        dict(placement="tower", proportional_attention=True),
        dict(placement="tower", schedule="paper", layer_ratio=0.8, merge="mean"),
    ],
)
def test_sdpa_equals_eager(processor, fixed_merge, options):
    """The whole path -- tower hooks, proportional attention, sources, packing -- under both kernels.

    The merge decisions come from a fixed metric: PiToMe and ToMe rank tokens, and on the random
    tiny tower hundreds of energies lie within 1e-6 of each other, closer than the two kernels agree.
    """
    from vtcompress.integrations.llava_next.tiny import build_tiny_llava_next

    inputs = inputs_for(processor, [IMAGE_SIZES["letterbox_tall"]])
    results, kept = {}, {}
    for impl in ("sdpa", "eager"):
        model, _ = build_tiny_llava_next(attn_implementation=impl)
        handle = vtcompress.compress(model, fixed_merge(ratio=0.25, **options))
        results[impl] = logits(model, inputs)
        kept[impl] = [(v.positions, v.sizes) for v in handle.last_stats.images[0].views]
    assert kept["sdpa"] == kept["eager"]
    assert results["sdpa"].shape[1] < inputs["input_ids"].shape[1]
    assert torch.allclose(results["sdpa"], results["eager"], atol=1e-5)


@pytest.mark.parametrize("name", ["pitome-projector", "pitome-tower"])
def test_pitome_token_counts_do_not_depend_on_the_kernel(processor, name):
    from vtcompress.integrations.llava_next.tiny import build_tiny_llava_next

    inputs = inputs_for(processor, [IMAGE_SIZES["square"]])  # no padding: counts fixed by the rule
    counts = {}
    for impl in ("sdpa", "eager"):
        model, _ = build_tiny_llava_next(attn_implementation=impl)
        handle = vtcompress.compress(model, CONFIGS[name](0.25))
        counts[impl] = (logits(model, inputs).shape, [v.kept for v in handle.last_stats.images[0].views])
    assert counts["sdpa"] == counts["eager"]


def test_bad_options_name_the_fix():
    with pytest.raises(ValueError, match="placement='tower'"):
        PiToMeConfig(schedule="paper")
    with pytest.raises(ValueError, match="placement='tower'"):
        ToMeConfig(proportional_attention=True)
    with pytest.raises(ValueError, match="schedule='paper'"):
        PiToMeConfig(placement="tower", layer_ratio=0.9)
    with pytest.raises(ValueError, match="placement"):
        PiToMeConfig(placement="inside")
    with pytest.raises(ValueError, match="temperature"):
        PiToMeConfig(temperature=0)
    assert set(vtcompress.available_methods()) >= {"pitome", "tome"}
