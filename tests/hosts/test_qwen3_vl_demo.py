"""The demo engine on a Qwen3-VL checkpoint: one picture of the whole image drawn from the pixels
the tower saw (16 px patches, mean / std 0.5), counts by the merged-grid rule, the methods the
host serves, and refusals as messages."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.conftest import demo_engine, make_image
from vtcompress.budget import keep_count
from vtcompress.integrations.mrope_demo import merged_token_pixels
from vtcompress.integrations.qwen3_vl import merged_grid

pytest.importorskip("gradio", reason="the demo needs the demo extra")


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    from vtcompress.integrations.qwen3_vl.tiny import save_tiny_qwen3_vl

    return demo_engine(save_tiny_qwen3_vl, tmp_path_factory.mktemp("qwen3"))


def striped(width: int, height: int) -> Image.Image:
    """Colour bars in both directions: a mix-up of token order (rows for columns, merge blocks) shows."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([(x * 7) % 256, (y * 5) % 256, ((x + 2 * y) * 3) % 256], axis=2)
    return Image.fromarray(rgb.astype(np.uint8))


@pytest.mark.parametrize("size", [(640, 480), (300, 900)], ids=str)
def test_one_picture_of_the_merged_grid_with_counts(engine, size):
    assert engine.family == "qwen3_vl" and "Qwen3-VL" in engine.name and engine.random_weights
    c = engine.compare(make_image(*size), "What is here?", "tome", 0.25)
    rows, cols = merged_grid((size[1], size[0]))
    assert (c.tokens_before, c.tokens_after) == (rows * cols, keep_count(rows * cols, 0.25))
    assert [(v.name, v.original, v.kept) for v in c.views] == [("image", rows * cols, c.tokens_after)]
    assert c.views[0].image.size == (cols * 32, rows * 32)  # one square per merged token
    assert c.uncompressed.prompt_tokens - c.compressed.prompt_tokens == c.tokens_before - c.tokens_after


def test_the_picture_is_what_the_tower_saw(engine):
    """The un-flattened pixel values equal the image resized as the processor resizes it."""
    image = striped(500, 300)
    inputs = engine.processor(images=image, text=engine.prompt("What?"), return_tensors="pt")
    pixels = merged_token_pixels(engine, inputs["pixel_values"], inputs["image_grid_thw"][0])
    rows, cols = merged_grid((300, 500))
    expected = np.asarray(image.resize((cols * 32, rows * 32), Image.Resampling.BICUBIC))
    assert pixels.shape == expected.shape
    assert np.abs(pixels.astype(int) - expected.astype(int)).max() <= 1


def test_ratio_one_keeps_every_token_and_the_answer(engine):
    c = engine.compare(make_image(400, 400), "What?", "uniform", 1.0)
    assert c.tokens_after == c.tokens_before
    assert c.compressed.answer == c.uncompressed.answer


def test_served_methods_and_refusals(engine):
    from vtcompress.integrations.demo.engine import InputError

    assert engine.served_methods() == ["divprune", "downsample", "pitome", "random", "tome", "uniform"]
    with pytest.raises(InputError, match="cannot run on this model.*this host serves .*random, uniform"):
        engine.compare(make_image(300, 300), "What?", "globalcom2", 0.5)
    with pytest.raises(
        InputError, match=r"6000x28 px, an aspect ratio of 214:1; Qwen3-VL accepts at most 200:1"
    ):
        engine.compare(Image.new("RGB", (6000, 28)), "What?", "uniform", 0.5)
