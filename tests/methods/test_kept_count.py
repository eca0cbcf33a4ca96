"""``config.kept_count(layout)``: what an image keeps, known before it is seen, is what a host keeps."""

from __future__ import annotations

import pytest
import torch

import vtcompress as vtc
from tests.conftest import IMAGE_SIZES, inputs_for
from vtcompress.integrations.llava_next.layout import AnyResLayout
from vtcompress.integrations.llava_next.tiny import PINPOINTS

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.mark.parametrize("method", vtc.available_methods("image"))
@torch.no_grad()
def test_kept_count_is_what_the_llava_next_host_keeps(tiny, method):
    model, processor = tiny
    sizes = [IMAGE_SIZES["letterbox_wide"], IMAGE_SIZES["tall"], IMAGE_SIZES["square"]]
    config = vtc.config_for(model, method, ratio=0.3)
    with vtc.compressed(model, config) as handle:
        model(**inputs_for(processor, sizes))
    for (w, h), image in zip(sizes, handle.last_stats.images):
        expected = config.kept_count(AnyResLayout.for_image((h, w), PINPOINTS))
        assert expected == image.tokens_after, (method, (w, h))


@pytest.mark.parametrize(
    ("config", "option"),
    [
        (vtc.GlobalCom2Config.paper(ratio=0.3), "allocation='paper'"),
        (vtc.TokenCorrConfig(ratio=0.3, allocation="adaptive"), "allocation='adaptive'"),
        (vtc.PiToMeConfig(ratio=0.3, placement="tower"), "placement='tower'"),
        (vtc.ToMeConfig.paper(ratio=0.3), "placement='tower'"),
    ],
    ids=lambda v: getattr(v, "method", v),
)
def test_content_dependent_modes_have_no_count_and_say_why(config, option):
    layout = AnyResLayout.for_image((300, 500), PINPOINTS)
    assert config.kept_count(layout) is None
    assert config.content_dependence().startswith(option)
    off = config.replace(ratio=1.0)
    if off.is_off:  # every token, whatever the mode
        assert off.kept_count(layout) == layout.num_tokens()


def test_newline_policy_is_the_option_and_unpadded_when_off():
    assert vtc.GlobalCom2Config(newline="none").newline_policy == "none"
    assert vtc.GlobalCom2Config(ratio=1.0, newline="none").newline_policy == "unpadded"
    assert vtc.UniformConfig().newline_policy == "unpadded"


def test_a_tower_merging_config_without_the_protocol_is_refused(tiny):
    from dataclasses import dataclass

    from vtcompress.config import TOWER_MERGE, CompressionConfig
    from vtcompress.registry import _METHODS, register_method

    @dataclass
    class HalfTowerConfig(CompressionConfig):
        def requirements(self, score_layer, num_layers):
            return {TOWER_MERGE: ""}

    register_method("half_tower", HalfTowerConfig)(lambda tokens, config: None)
    try:
        with pytest.raises(TypeError, match="lacks merge, proportional_attention, plan, tower_schedule"):
            vtc.compress(tiny[0], HalfTowerConfig(ratio=0.5))
        assert vtc.get_handle(tiny[0]) is None
    finally:
        del _METHODS["half_tower"]
