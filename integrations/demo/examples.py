"""The example images, drawn with Pillow (deterministic: same pixels on every machine with the
same Pillow), so that nothing is downloaded. ``scripts/make_examples.py`` saves them as the PNGs
shipped in :mod:`vtcompress.integrations.examples` (which also holds each example's question).

Three shapes of input that exercise LLaVA-NeXT's anyres grid differently: a 4:3 scene (2x2
crops, letterboxed top and bottom), a 1:2 document (two crops, one above the other) and a 3:1
chart (three crops side by side).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from vtcompress.integrations.examples import EXAMPLES


@dataclass(frozen=True)
class Example:
    name: str
    question: str
    image: Image.Image


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: only the fixed bitmap font
        return ImageFont.load_default()


def scene() -> Image.Image:
    """640x480: sky, grass, a red sun, a blue house with a door, a green tree."""
    img = Image.new("RGB", (640, 480), (150, 200, 250))
    d = ImageDraw.Draw(img)
    d.rectangle([0, 330, 640, 480], fill=(70, 160, 70))
    d.ellipse([480, 40, 580, 140], fill=(230, 40, 30))
    d.rectangle([110, 210, 300, 360], fill=(40, 70, 200))
    d.polygon([(90, 210), (205, 120), (320, 210)], fill=(140, 40, 40))
    d.rectangle([185, 290, 225, 360], fill=(90, 55, 20))
    d.rectangle([420, 250, 445, 360], fill=(100, 60, 20))
    d.ellipse([375, 160, 490, 275], fill=(30, 120, 40))
    return img


def receipt() -> Image.Image:
    """360x720: a shop receipt with items, prices and a total."""
    img = Image.new("RGB", (360, 720), (250, 250, 245))
    d = ImageDraw.Draw(img)
    title, body = _font(30), _font(20)
    d.text((180, 40), "CORNER SHOP", fill=(0, 0, 0), font=title, anchor="mm")
    d.line([30, 80, 330, 80], fill=(0, 0, 0), width=2)
    items = [("Apples", "2.40"), ("Bread", "3.10"), ("Milk", "1.25"), ("Coffee", "6.80"), ("Eggs", "2.95")]
    y = 110
    for name, price in items:
        d.text((40, y), name, fill=(20, 20, 20), font=body)
        d.text((320, y), price, fill=(20, 20, 20), font=body, anchor="ra")
        y += 45
    d.line([30, y + 10, 330, y + 10], fill=(0, 0, 0), width=2)
    d.text((40, y + 30), "TOTAL", fill=(0, 0, 0), font=title)
    d.text((320, y + 30), "16.50", fill=(0, 0, 0), font=title, anchor="ra")
    d.text((180, 660), "Thank you!", fill=(90, 90, 90), font=body, anchor="mm")
    return img


def bar_chart() -> Image.Image:
    """960x320: five labelled bars; C is the tallest."""
    img = Image.new("RGB", (960, 320), (255, 255, 255))
    d = ImageDraw.Draw(img)
    font = _font(22)
    heights = {"A": 120, "B": 180, "C": 250, "D": 90, "E": 160}
    colors = [(220, 60, 60), (60, 140, 220), (60, 180, 90), (230, 160, 40), (140, 80, 200)]
    d.line([40, 280, 920, 280], fill=(0, 0, 0), width=2)
    for i, ((label, height), color) in enumerate(zip(heights.items(), colors)):
        x = 90 + i * 170
        d.rectangle([x, 280 - height, x + 100, 280], fill=color)
        d.text((x + 50, 300), label, fill=(0, 0, 0), font=font, anchor="mm")
    return img


DRAWINGS = {"scene": scene, "receipt": receipt, "bar_chart": bar_chart}


def examples() -> list[Example]:
    return [Example(name, EXAMPLES[name].question, draw()) for name, draw in DRAWINGS.items()]


def write_examples(directory: str | Path) -> list[tuple[str, str]]:
    """Save the examples as PNGs in ``directory``; returns ``[(path, question), ...]``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for ex in examples():
        path = directory / f"{ex.name}.png"
        ex.image.save(path)
        out.append((str(path), ex.question))
    return out
