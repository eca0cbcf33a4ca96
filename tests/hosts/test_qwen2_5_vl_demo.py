"""The demo engine on a Qwen2.5-VL checkpoint: one picture of the whole image drawn from the
pixels the tower saw, counts by the merged-grid rule, the methods the host serves (pitome / tome
by name), options from the page, and refusals as messages."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.conftest import demo_engine, make_image
from vtcompress.budget import keep_count
from vtcompress.integrations.mrope_demo import merged_token_pixels
from vtcompress.integrations.qwen2_5_vl import merged_grid

pytest.importorskip("gradio", reason="the demo needs the demo extra")


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    from vtcompress.integrations.qwen2_5_vl.tiny import save_tiny_qwen2_5_vl

    return demo_engine(save_tiny_qwen2_5_vl, tmp_path_factory.mktemp("qwen"))


def striped(width: int, height: int) -> Image.Image:
    """Colour bars in both directions: a picture whose tokens differ from their neighbours, so
    a mix-up of token order (rows for columns, merge blocks) shows."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([(x * 7) % 256, (y * 5) % 256, ((x + 2 * y) * 3) % 256], axis=2)
    return Image.fromarray(rgb.astype(np.uint8))


@pytest.mark.parametrize("size", [(640, 480), (300, 900), (1000, 140)], ids=str)
def test_one_picture_of_the_merged_grid_with_counts(engine, size):
    assert engine.family == "qwen2_5_vl" and "Qwen2.5-VL" in engine.name and engine.random_weights
    c = engine.compare(make_image(*size), "What is here?", "uniform", 0.25)
    rows, cols = merged_grid((size[1], size[0]))
    assert (c.tokens_before, c.tokens_after) == (rows * cols, keep_count(rows * cols, 0.25))
    assert (c.newlines_before, c.newlines_after) == (0, 0)
    assert [(v.name, v.original, v.kept) for v in c.views] == [("image", rows * cols, c.tokens_after)]
    assert c.views[0].image.size == (cols * 28, rows * 28)  # one square per merged token
    assert "resized to" in c.note and "letterbox" not in c.legend
    assert c.uncompressed.prompt_tokens - c.compressed.prompt_tokens == c.tokens_before - c.tokens_after


def test_the_picture_is_what_the_tower_saw(engine):
    """The un-flattened pixel values equal the image resized as the processor resizes it."""
    image = striped(500, 300)
    inputs = engine.processor(images=image, text=engine.prompt("What?"), return_tensors="pt")
    pixels = merged_token_pixels(engine, inputs["pixel_values"], inputs["image_grid_thw"][0])
    rows, cols = merged_grid((300, 500))
    expected = np.asarray(image.resize((cols * 28, rows * 28), Image.Resampling.BICUBIC))
    assert pixels.shape == expected.shape
    assert np.abs(pixels.astype(int) - expected.astype(int)).max() <= 1


def test_ratio_one_keeps_every_token_and_the_answer(engine):
    c = engine.compare(make_image(400, 400), "What?", "uniform", 1.0)
    assert c.tokens_after == c.tokens_before and "off" in c.note
    assert c.compressed.answer == c.uncompressed.answer


def test_merging_by_name_uses_the_projected_metric_and_shows_regions(engine):
    c = engine.compare(make_image(448, 448), "What?", "pitome", 0.25)
    assert c.options == "metric='projected'"
    assert c.tokens_after == keep_count(c.tokens_before, 0.25)
    assert "colour" in c.legend


def test_options_from_the_page_reach_the_method(engine):
    image = make_image(448, 336)
    runs = [engine.compare(image, "What?", "random", 0.25, options) for options in ("", "seed=0", "seed=5")]
    assert [c.options for c in runs] == ["", "", "seed=5"]  # only what differs from the defaults
    pictures = [np.asarray(c.views[0].image) for c in runs]
    assert np.array_equal(pictures[0], pictures[1])  # seed=0 is the default
    assert not np.array_equal(pictures[0], pictures[2])  # another seed keeps other tokens
    two = engine.compare(image, "What?", "tome", 0.25, "steps=2,\nmerge=mean")
    assert two.options == "merge='mean', steps=2, metric='projected'"


def test_served_methods_and_refusals(engine):
    from vtcompress.integrations.demo.engine import InputError

    assert engine.served_methods() == ["divprune", "downsample", "pitome", "random", "tome", "uniform"]
    with pytest.raises(InputError, match="cannot run on this model.*serves .*random, uniform"):
        engine.compare(make_image(300, 300), "What?", "globalcom2", 0.5)
    with pytest.raises(InputError, match="pitome has no option 'seed'"):
        engine.compare(make_image(300, 300), "What?", "pitome", 0.5, "seed=1")
    with pytest.raises(InputError, match="slider"):
        engine.compare(make_image(300, 300), "What?", "uniform", 0.5, "ratio=0.3")
    with pytest.raises(
        InputError, match=r"6000x28 px, an aspect ratio of 214:1; Qwen2.5-VL accepts at most 200:1"
    ):
        engine.compare(Image.new("RGB", (6000, 28)), "What?", "uniform", 0.5)
    with pytest.raises(InputError, match="steps is a whole number"):
        engine.compare(make_image(300, 300), "What?", "tome", 0.5, "steps=two")
