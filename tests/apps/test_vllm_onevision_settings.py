"""The vLLM OneVision host's settings (no vLLM needed): the family's defaults, refusals that name
the field, what a family cannot serve, and the placeholder counts of images and clips."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from vtcompress.integrations.llava_onevision.layout import DEFAULT_PINPOINTS
from vtcompress.integrations.vllm import onevision_settings as ov
from vtcompress.integrations.vllm import settings
from vtcompress.integrations.vllm.plugin import architectures

# LLaVA-OneVision with SigLIP/14 at 384 px, 26 layers, features from the last (vision_feature_layer -1).
HF_CONFIG = SimpleNamespace(
    vision_config=SimpleNamespace(image_size=384, patch_size=14, num_hidden_layers=26),
    vision_feature_layer=-1,
    vision_feature_select_strategy="full",
    vision_aspect_ratio="anyres_max_9",
    image_grid_pinpoints=[list(p) for p in DEFAULT_PINPOINTS],
)
GEOMETRY = ov.OneVisionGeometry.from_hf_config(HF_CONFIG)
SERVER = {"method": "globalcom2", "ratio": 0.25}
WHERE = "mm_processor_kwargs.vtcompress"


def test_the_plugin_registers_the_onevision_architecture():
    assert architectures()["VtcompressLlavaOnevisionForConditionalGeneration"] == (
        "vtcompress.integrations.vllm.onevision:CompressedOnevisionForConditionalGeneration"
    )


def test_geometry():
    assert (GEOMETRY.score_layer, GEOMETRY.num_layers, GEOMETRY.pooled_side) == (25, 26, 14)


def test_method_names_get_the_onevision_defaults():
    config = ov.resolve(SERVER, None, GEOMETRY)
    assert (config.method, config.ratio, config.score) == ("globalcom2", 0.25, "mean_cos")  # SigLIP: no [CLS]
    assert ov.resolve(SERVER, {"ratio": 0.5}, GEOMETRY).score == "mean_cos"
    other = ov.resolve(SERVER, {"method": "pitome", "ratio": 0.1}, GEOMETRY)
    assert (other.method, other.ratio, other.metric) == ("pitome", 0.1, "projected")
    assert ov.resolve(settings.server_settings(SimpleNamespace()), None, GEOMETRY).is_off


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"ratio": 1.5}, ["ratio"]),
        ({"ratio": "half"}, ["ratio"]),
        ({"method": "no-such-method"}, ["no-such-method"]),
        ({"colour": 1}, ["colour"]),
        ({"method": "fastervlm"}, ["fastervlm", "[CLS]", "serves"]),
        ({"method": "tokencorr"}, ["tokencorr"]),
        ({"method": "visionzip"}, ["visionzip", "divprune"]),
        ({"method": "fastv"}, ["fastv", "serving engine"]),
        ({"method": "pyramiddrop"}, ["pyramiddrop"]),
        ({"method": "globalcom2", "score": "cls"}, ["globalcom2"]),
        ({"method": "globalcom2", "allocation": "paper"}, ["allocation='paper'"]),
        ({"method": "vidcom2", "allocation": "paper"}, ["allocation='paper'"]),
        ({"method": "pitome", "placement": "tower"}, ["placement"]),
        ("0.5", ["vtcompress"]),
    ],
)
def test_bad_or_unservable_requests_name_the_field(options, words):
    with pytest.raises(ValueError) as err:
        ov.resolve(SERVER, options, GEOMETRY, where=WHERE)
    message = str(err.value)
    assert WHERE in message and "\n" not in message
    for word in words:
        assert word in message, (word, message)


def test_a_video_method_refuses_images_but_takes_clips():
    config = ov.resolve(SERVER, {"method": "vidcom2"}, GEOMETRY, where=WHERE)
    ov.check_media(config, images=0, where=WHERE)
    with pytest.raises(ValueError, match=r"mm_processor_kwargs\.vtcompress.*vidcom2.*videos only"):
        ov.check_media(config, images=1, where=WHERE)
    ov.check_media(ov.resolve(SERVER, {"method": "vidcom2", "ratio": 1.0}, GEOMETRY), images=1)  # off
    ov.check_media(ov.resolve(SERVER, {"ratio": 0.1}, GEOMETRY), images=2)  # image methods take both


def test_checkpoints_vllm_cannot_count_are_refused():
    for change, word in (
        ({"vision_feature_select_strategy": "default"}, "full"),
        ({"vision_aspect_ratio": "anyres_max_4"}, "anyres_max_9"),
        ({"vision_feature_layer": [-2, -1]}, "vision_feature_layer"),
    ):
        with pytest.raises(ValueError, match=word):
            ov.OneVisionGeometry.from_hf_config(SimpleNamespace(**{**vars(HF_CONFIG), **change}))


@pytest.mark.parametrize(
    ("size", "ratio", "expected"),
    [
        # 300x500 (h x w): 1x2 crops of 27x27, unpadded to 27 rows x 54 - 2*5 cols... counted by hand:
        # N = 729 + 27 * 46 = 1971, 27 newlines.
        ((300, 500), 1.0, 1971 + 27),
        ((300, 500), 0.25, 492 + 27),
        ((300, 500), 0.1, 197 + 27),
        # 800x1600: 3x5 crops unpadded to 67x135 tokens, shrunk by anyres_max_9 to 57x114:
        # N = 729 + 57 * 114 = 7227, 57 newlines.
        ((800, 1600), 1.0, 7227 + 57),
        ((800, 1600), 0.5, 3613 + 57),
    ],
)
def test_image_placeholder_count_is_the_exact_budget_rule(size, ratio, expected):
    config = ov.resolve(SERVER, {"ratio": ratio}, GEOMETRY)
    assert ov.image_placeholder_count(config, GEOMETRY.image_layout(*size)) == expected


@pytest.mark.parametrize(
    ("options", "frames", "expected"),
    [
        ({"method": "vidcom2", "ratio": 1.0}, 4, 4 * 196 + 1),  # the stock run: frames x 14x14 + newline
        ({"method": "vidcom2", "ratio": 0.25}, 4, 196 + 1),
        ({"method": "evs", "ratio": 0.1}, 4, 196 + 1),  # EVS keeps frame 0 whole: max(196, 78)
        ({"method": "evs", "ratio": 0.1}, 16, 313 + 1),  # floor(313.6)
        # DyCoke's TTM: frames in pairs, the second of each pruned to int(0.1 * 196) = 19 tokens
        ({"method": "dycoke_ttm", "ratio": 0.1}, 4, 2 * 196 + 2 * 19 + 1),
        ({"method": "visionzip_video", "ratio": 0.5}, 2, 196 + 1),
        ({"method": "uniform", "ratio": 0.25}, 4, 196 + 1),  # image methods run frame by frame
    ],
)
def test_clip_placeholder_count(options, frames, expected):
    config = ov.resolve(SERVER, options, GEOMETRY)
    assert ov.clip_placeholder_count(config, GEOMETRY.clip_layout(frames)) == expected
