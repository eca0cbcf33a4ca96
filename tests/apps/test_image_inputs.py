"""One rule for the images the command line, the demo and the lmms-eval plugin accept and how
odd images (16-bit, transparent, gray) become the RGB the model sees."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vtcompress.integrations.inputs import IMAGE_LIMITS, ImageLimits, open_image, to_rgb


def test_sixteen_bit_gray_is_scaled_not_clipped(tmp_path):
    ramp = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)  # 0 .. 65520
    path = tmp_path / "ramp16.png"
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode.startswith("I")
    rgb = np.asarray(open_image(path))
    assert rgb.shape == (64, 64, 3) and rgb.dtype == np.uint8
    assert rgb[0, 0, 0] == 0 and rgb[-1, -1, 0] == 65520 * 255 // 65535
    assert len(np.unique(rgb[..., 0])) > 200  # a ramp, not a white square


def test_transparency_is_shown_on_white_and_gray_becomes_rgb():
    clear = Image.new("RGBA", (30, 30), (255, 0, 0, 0))
    half = Image.new("RGBA", (30, 30), (0, 0, 255, 128))
    assert np.asarray(to_rgb(clear))[0, 0].tolist() == [255, 255, 255]
    assert np.asarray(to_rgb(half))[0, 0].tolist() == [127, 127, 255]
    gray = to_rgb(Image.new("L", (30, 30), 90))
    assert gray.mode == "RGB" and np.asarray(gray)[0, 0].tolist() == [90, 90, 90]


@pytest.mark.parametrize(
    ("size", "expected"),
    [((28, 28), None), ((27, 500), "too small"), ((3000, 28), None), ((7000, 6000), "megapixels")],
)
def test_limits(size, expected):
    problem = IMAGE_LIMITS.problem(*size)
    assert problem is None if expected is None else expected in problem
    assert ImageLimits(min_side=10).problem(3000, 12) is None
