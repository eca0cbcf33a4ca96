"""The demo engine on a LLaVA-OneVision checkpoint: counts by OneVision's rule, one picture per
view (tiles of the shrunk map included), and a method the host cannot serve as a message."""

from __future__ import annotations

import pytest

from tests.conftest import demo_engine, make_image
from vtcompress.budget import keep_count
from vtcompress.integrations.llava_onevision.layout import OneVisionLayout

pytest.importorskip("gradio", reason="the demo needs the demo extra")


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    from vtcompress.integrations.llava_onevision.tiny import save_tiny_onevision

    return demo_engine(save_tiny_onevision, tmp_path_factory.mktemp("onevision"))


@pytest.mark.parametrize("size", [(640, 480), (1920, 1080)], ids=str)
def test_counts_and_one_picture_per_view(engine, size):
    assert engine.family == "llava_onevision" and engine.random_weights and "LLaVA-OneVision" in engine.name
    result = engine.compare(make_image(*size), "What is here?", "uniform", 0.25)
    layout = OneVisionLayout.for_image((size[1], size[0]))
    assert (result.tokens_before, result.tokens_after) == (
        layout.num_tokens(),
        keep_count(layout.num_tokens(), 0.25),
    )
    assert (result.newlines_before, result.newlines_after) == (layout.num_newlines(), layout.num_newlines())
    assert [v.name for v in result.views] == layout.view_names()
    assert [v.original for v in result.views] == layout.view_counts()
    assert all(v.image.size == (378, 378) for v in result.views)  # 27 patches of 14 px


def test_a_method_needing_cls_is_a_message(engine):
    from vtcompress.integrations.demo.engine import InputError

    with pytest.raises(InputError, match="SigLIP has no"):
        engine.compare(make_image(640, 480), "What?", "tokencorr", 0.5)
