"""The vLLM host's settings (no vLLM needed): precedence, refusals that name the field, the
placeholder count, and the per-image encoding."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from vtcompress.integrations.llava_next.tiny import PINPOINTS
from vtcompress.integrations.vllm import settings
from vtcompress.registry import available_methods

# LLaVA-NeXT with CLIP ViT-L/14-336: 24 layers, features from layer -2 (vLLM builds 23 layers).
HF_CONFIG = SimpleNamespace(
    vision_config=SimpleNamespace(image_size=336, patch_size=14, num_hidden_layers=24),
    vision_feature_layer=-2,
    vision_feature_select_strategy="default",
    image_grid_pinpoints=PINPOINTS,
)
GEOMETRY = settings.VisionGeometry.from_hf_config(HF_CONFIG)
SERVER = {"method": "globalcom2", "ratio": 0.25, "alpha": 0.3}


def test_geometry_matches_vllm_tower_depth():
    assert (GEOMETRY.depth, GEOMETRY.score_layer, GEOMETRY.num_layers) == (23, 23, 24)


def test_request_options_change_the_server_settings():
    assert settings.resolve(SERVER, None, GEOMETRY).to_dict() == {
        **settings.resolve(SERVER, {}, GEOMETRY).to_dict()
    }
    config = settings.resolve(SERVER, {"ratio": 0.5}, GEOMETRY)
    assert (config.method, config.ratio, config.alpha) == ("globalcom2", 0.5, 0.3)
    other = settings.resolve(SERVER, {"method": "uniform", "ratio": 0.1}, GEOMETRY)
    assert (other.method, other.ratio) == ("uniform", 0.1)  # another method: its own defaults


def test_no_server_entry_means_off():
    config = settings.resolve(settings.server_settings(SimpleNamespace()), None, GEOMETRY)
    assert config.is_off


@pytest.mark.parametrize(
    ("request_options", "field"),
    [
        ({"ratio": 1.5}, "ratio"),
        ({"ratio": 0}, "ratio"),
        ({"ratio": "half"}, "ratio"),
        ({"method": "no-such-method"}, "method"),
        ({"alpha": 2.0}, "alpha"),
        ({"colour": 1}, "colour"),
        ({"allocation": "paper"}, "allocation"),
        ({"method": "tokencorr", "allocation": "adaptive"}, "allocation"),
        ({"method": "pitome", "placement": "tower"}, "placement"),
        ("0.5", "vtcompress"),
    ],
)
def test_bad_request_values_name_the_field(request_options, field):
    with pytest.raises(ValueError, match=field) as err:
        settings.resolve(SERVER, request_options, GEOMETRY, where="mm_processor_kwargs.vtcompress")
    assert "mm_processor_kwargs.vtcompress" in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("method", ["visionzip", "divprune", "downsample"])
def test_the_pre_llm_baselines_follow_the_count_rule(method):
    config = settings.resolve(SERVER, {"method": method, "ratio": 0.3}, GEOMETRY)
    layout = GEOMETRY.layout(500, 1000)
    assert settings.placeholder_count(config, layout) == int(0.3 * layout.num_tokens()) + layout.num_newlines(
        "unpadded"
    )


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        # int(round(0.3 * N)): the official DivPrune count
        ({"method": "divprune", "allocation": "paper", "ratio": 0.3}, lambda n, views: int(round(0.3 * n))),
        # 54 + 10 a view (the published split), whatever the ratio
        ({"method": "visionzip", "dominant": 54, "contextual": 10}, lambda n, views: 64 * views),
        # the official selection leaves the absent [CLS]'s slot empty: 53 + 10 a view
        (
            {"method": "visionzip", "dominant": 54, "contextual": 10, "cls_slot": "drop"},
            lambda n, views: 63 * views,
        ),
    ],
)
def test_static_counts_other_than_the_budget_rule_are_served_with_their_own_count(options, expected):
    config = settings.resolve(SERVER, options, GEOMETRY)
    layout = GEOMETRY.layout(500, 1000)
    newlines = layout.num_newlines("unpadded")
    assert (
        settings.placeholder_count(config, layout)
        == expected(layout.num_tokens(), layout.num_views) + newlines
    )


def test_layers_beyond_the_built_tower_are_refused():
    # Features from layer -3: vLLM builds 22 layers, so layer 23's q/k do not exist.
    shallow = settings.VisionGeometry.from_hf_config(
        SimpleNamespace(**{**vars(HF_CONFIG), "vision_feature_layer": -3})
    )
    assert shallow.depth == 22
    with pytest.raises(ValueError, match="layers <= 22"):
        settings.resolve(SERVER, {"method": "tokencorr", "deep_layer": -1, "ratio": 0.25}, shallow)


@pytest.mark.parametrize(
    ("size", "ratio", "expected"),
    [
        # 672x672: 2x2 grid, no padding: N = 576 + 48*48 = 2880, 48 newlines.
        ((672, 672), 1.0, 2880 + 48),
        ((672, 672), 0.25, 720 + 48),
        ((672, 672), 0.1, 288 + 48),
        # 500x300 (w x h): 1x2 grid of 24x48 tokens; 500 * 24/300 = 40 columns survive unpadding.
        ((500, 300), 1.0, 576 + 24 * 40 + 24),
        ((500, 300), 0.5, (576 + 24 * 40) // 2 + 24),
        ((500, 300), 0.1, 153 + 24),  # floor(0.1 * 1536)
    ],
)
def test_placeholder_count_is_the_exact_budget_rule(size, ratio, expected):
    w, h = size
    config = settings.resolve(SERVER, {"ratio": ratio}, GEOMETRY)
    assert settings.placeholder_count(config, GEOMETRY.layout(h, w)) == expected


def test_newline_option_changes_the_count():
    layout = GEOMETRY.layout(672, 672)
    none = settings.resolve(SERVER, {"ratio": 0.25, "newline": "none"}, GEOMETRY)
    assert settings.placeholder_count(none, layout) == 720


@pytest.mark.parametrize("method", available_methods())
def test_encoding_round_trips_every_method(method):
    config = settings.make_config(method, ratio=0.29)
    assert settings.decode(settings.encode(config)) == config
