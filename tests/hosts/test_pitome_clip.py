"""In-tower merging hooks on a plain Hugging Face CLIP vision model."""

from __future__ import annotations

import pytest
import torch
from transformers import CLIPVisionConfig, CLIPVisionModel

from vtcompress.integrations.clip_merge import TowerMerge
from vtcompress.merge import merge_tokens, pitome_plan, tome_plan


def tiny_clip(impl: str = "sdpa") -> CLIPVisionModel:
    config = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        image_size=56,
        patch_size=7,
    )
    config._attn_implementation = impl
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return CLIPVisionModel(config).eval()


def layers_of(model: CLIPVisionModel):
    # transformers >= 5.2x flattened CLIPVisionModel; older 5.x keep a .vision_model.
    return getattr(model, "vision_model", model).encoder.layers


def pixels(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, 56, 56, generator=torch.Generator().manual_seed(1))


def pitome_step(metric, r, layer):
    return pitome_plan(metric[:, 1:], r, margin=0.9 * (1 - layer / 4))


def constant(counts):
    return lambda patches: [[c] for c in counts]


@torch.no_grad()
@pytest.mark.parametrize("request_before_install", [True, False])
def test_recorded_hidden_states_are_the_merged_ones(request_before_install):
    model, x = tiny_clip(), pixels()
    if request_before_install:  # transformers installs its capture hooks lazily, on first request
        model(x, output_hidden_states=True)
    tower = TowerMerge(layers_of(model), pitome_step, constant([48, 40, 30]), 3)
    out = model(x, output_hidden_states=True)
    assert [h.shape[1] for h in out.hidden_states] == [65, 49, 41, 31, 31]
    assert tower.token_counts == [48, 40, 30]
    assert torch.equal(tower.sizes.sum(1), torch.full((2,), 64))
    tower.remove()
    assert [h.shape[1] for h in model(x, output_hidden_states=True).hidden_states] == [65] * 5


@torch.no_grad()
def test_hooks_equal_merging_by_hand():
    """The hook after layer 0 does exactly what merge_tokens does to that layer's output."""
    model, x = tiny_clip(), pixels()
    layers = layers_of(model)
    first = {}
    TowerMerge(layers, lambda m, r, layer: tome_plan(m, r, class_token=True), constant([40]), 1)
    # Registered last with prepend: runs before the merge hook, so it sees the unmerged output.
    layers[0].register_forward_hook(lambda m, a, o: first.setdefault("out", o.clone()), prepend=True)
    merged = model(x, output_hidden_states=True).hidden_states[1]
    expected = merge_tokens(first["out"], tome_plan(first["out"], 24, class_token=True), class_token=True)
    assert torch.equal(merged, expected)


@torch.no_grad()
def test_disabled_and_removed_are_exact():
    model, x = tiny_clip(), pixels()
    reference = model(x).last_hidden_state
    on = {"value": False}
    tower = TowerMerge(
        layers_of(model),
        pitome_step,
        constant([40, 30]),
        2,
        proportional_attention=True,
        enabled=lambda: on["value"],
    )
    assert torch.equal(model(x).last_hidden_state, reference)
    on["value"] = True
    assert model(x).last_hidden_state.shape[1] == 31
    tower.remove()
    tower.remove()
    assert torch.equal(model(x).last_hidden_state, reference)
    assert all("forward" not in layer.self_attn.__dict__ for layer in layers_of(model))


@torch.no_grad()
def test_proportional_attention_with_unit_sizes_is_stock_attention():
    """A schedule that merges nothing leaves every size at 1: log(1) = 0 changes no logit."""
    model, x = tiny_clip(), pixels()
    reference = model(x).last_hidden_state
    tower = TowerMerge(layers_of(model), pitome_step, constant([64]), 1, proportional_attention=True)
    torch.testing.assert_close(model(x).last_hidden_state, reference, rtol=1e-5, atol=1e-5)
    tower.remove()


@torch.no_grad()
def test_proportional_attention_sdpa_equals_eager_and_changes_the_output():
    outs = {}
    for impl in ("sdpa", "eager"):
        for prop in (False, True):
            model = tiny_clip(impl)
            # Fixed merges (ToMe on a fixed metric) so both kernels merge the same tokens.
            gen = torch.Generator().manual_seed(0)
            fixed = torch.randn(1, 65, 8, generator=gen)

            def plan(m, r, layer, fixed=fixed):
                return tome_plan(fixed[:, : m.shape[1]].expand(m.shape[0], -1, -1), r, class_token=True)

            TowerMerge(layers_of(model), plan, constant([40, 30]), 2, proportional_attention=prop)
            outs[impl, prop] = model(pixels()).last_hidden_state
    torch.testing.assert_close(outs["sdpa", True], outs["eager", True], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(outs["sdpa", False], outs["eager", False], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(outs["sdpa", True], outs["sdpa", False], atol=1e-4)


def test_bad_merge_layer_count():
    with pytest.raises(ValueError, match="num_merge_layers"):
        TowerMerge(layers_of(tiny_clip()), pitome_step, constant([]), 0)
