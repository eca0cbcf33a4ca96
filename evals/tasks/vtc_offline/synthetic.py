"""Deterministic synthetic image QA and document QA, drawn with Pillow only.

Every sample is a pure function of ``(kind, seed, index)``: the same arguments give the same
picture, question and answer on any machine, so offline benchmarks need no download and no
committed images. Two kinds:

- ``shapes``: coloured circles, squares and triangles on a grid of cells; questions about counts,
  colours, shapes and presence (image QA, single-word answers).
- ``document``: a rendered invoice page (title, header fields, an item table, a total); questions
  whose answers are printed on the page (document QA, short-phrase answers).

Image sizes vary in aspect ratio on purpose, so that AnyRes models split them into different crop
grids. ``python synthetic.py OUT_DIR`` writes the images as PNG plus a ``samples.jsonl`` to look at.
"""

from __future__ import annotations

import json
import random
import sys
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 200, 30),
    "purple": (140, 60, 170),
    "orange": (240, 130, 30),
}
SHAPES = ("circle", "square", "triangle")
SHAPE_CANVAS_SIZES = ((336, 336), (448, 336), (336, 448), (672, 336), (512, 384))
DOCUMENT_PAGE_SIZES = ((420, 560), (560, 420), (480, 640))
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

FIRST_NAMES = ("Alice", "Bruno", "Chen", "Dana", "Emil", "Farah", "Goran", "Hana", "Ivan", "Julia")
LAST_NAMES = ("Moreno", "Schmidt", "Okafor", "Lindqvist", "Tanaka", "Novak", "Rossi", "Weber")
ITEMS = ("Paper", "Toner", "Stapler", "Folder", "Marker", "Cable", "Lamp", "Notebook", "Battery")


@dataclass(frozen=True)
class Sample:
    """One question about one generated image; ``answer`` is the only correct reply."""

    question_id: str
    kind: str
    image: Image.Image
    question: str
    answer: str
    question_type: str

    def record(self) -> dict:
        """The sample as a flat dict (the image stays a PIL image)."""
        return {
            "question_id": self.question_id,
            "kind": self.kind,
            "image": self.image,
            "question": self.question,
            "answer": self.answer,
            "question_type": self.question_type,
        }


def _rng(kind: str, seed: int, index: int) -> random.Random:
    # A string seed is hashed with SHA-512 by `random`, so it is stable across processes and
    # Python versions (unlike hash()).
    return random.Random(f"vtcompress/{kind}/{seed}/{index}")


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow < 10.1 or built without FreeType
        return ImageFont.load_default()


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], fill) -> None:
    x0, y0, x1, y1 = box
    if shape == "circle":
        draw.ellipse(box, fill=fill, outline=(0, 0, 0), width=2)
    elif shape == "square":
        draw.rectangle(box, fill=fill, outline=(0, 0, 0), width=2)
    else:
        draw.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], fill=fill, outline=(0, 0, 0))


def shapes_sample(seed: int, index: int) -> Sample:
    """A canvas with 2..7 shapes in distinct grid cells and one question about them."""
    rng = _rng("shapes", seed, index)
    width, height = SHAPE_CANVAS_SIZES[index % len(SHAPE_CANVAS_SIZES)]
    cols, rows = max(2, round(3 * width / min(width, height))), max(2, round(3 * height / min(width, height)))
    cell_w, cell_h = width // cols, height // rows
    count = rng.randint(2, min(7, cols * rows))
    cells = rng.sample(range(cols * rows), count)
    objects = [(rng.choice(SHAPES), rng.choice(list(COLOURS))) for _ in cells]

    image = Image.new("RGB", (width, height), (245, 245, 240))
    draw = ImageDraw.Draw(image)
    for cell, (shape, colour) in zip(cells, objects):
        cx, cy = (cell % cols) * cell_w, (cell // cols) * cell_h
        side = int(min(cell_w, cell_h) * rng.uniform(0.5, 0.8))
        x0 = cx + rng.randint(2, max(2, cell_w - side - 2))
        y0 = cy + rng.randint(2, max(2, cell_h - side - 2))
        _draw_shape(draw, shape, (x0, y0, x0 + side, y0 + side), COLOURS[colour])

    question_type = ("count_all", "count_colour", "colour_of_shape", "shape_of_colour", "exists")[index % 5]
    shape_counts = {s: sum(o[0] == s for o in objects) for s in SHAPES}
    colour_counts = {c: sum(o[1] == c for o in objects) for c in COLOURS}
    unique_shapes = [s for s in SHAPES if shape_counts[s] == 1]
    unique_colours = [c for c in COLOURS if colour_counts[c] == 1]
    if question_type == "colour_of_shape" and not unique_shapes:
        question_type = "count_all"
    if question_type == "shape_of_colour" and not unique_colours:
        question_type = "count_colour"

    if question_type == "count_all":
        question, answer = "How many shapes are in the image?", str(count)
    elif question_type == "count_colour":
        colour = rng.choice(sorted({o[1] for o in objects}))
        question, answer = f"How many {colour} shapes are in the image?", str(colour_counts[colour])
    elif question_type == "colour_of_shape":
        shape = rng.choice(unique_shapes)
        colour = next(o[1] for o in objects if o[0] == shape)
        question, answer = f"What colour is the {shape}?", colour
    elif question_type == "shape_of_colour":
        colour = rng.choice(unique_colours)
        shape = next(o[0] for o in objects if o[1] == colour)
        question, answer = f"What shape is the {colour} object?", shape
    else:
        shape, colour = rng.choice(SHAPES), rng.choice(list(COLOURS))
        if index % 2 == 0:  # half of the presence questions ask about an object that is there
            shape, colour = rng.choice(objects)
        present = (shape, colour) in objects
        question, answer = f"Is there a {colour} {shape} in the image?", "yes" if present else "no"
    return Sample(f"shapes-{seed}-{index}", "shapes", image, question, answer, question_type)


def document_sample(seed: int, index: int) -> Sample:
    """A rendered invoice page and one question whose answer is printed on it."""
    rng = _rng("document", seed, index)
    width, height = DOCUMENT_PAGE_SIZES[index % len(DOCUMENT_PAGE_SIZES)]
    invoice_no = str(rng.randint(10000, 99999))
    date = f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    customer = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
    items = [
        (name, rng.randint(1, 9), rng.randint(100, 9999) / 100)
        for name in rng.sample(ITEMS, rng.randint(2, 4))
    ]
    total = f"${sum(qty * price for _, qty, price in items):.2f}"

    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    body, title = _font(max(12, width // 28)), _font(max(20, width // 14))
    line = max(16, width // 20)
    x, y = width // 14, height // 16
    draw.text((x, y), "INVOICE", fill=(0, 0, 0), font=title)
    y += 2 * line
    for label, value in (("Invoice No", invoice_no), ("Date", date), ("Customer", customer)):
        draw.text((x, y), f"{label}: {value}", fill=(0, 0, 0), font=body)
        y += line
    y += line // 2
    draw.line((x, y, width - x, y), fill=(0, 0, 0), width=1)
    y += line // 2
    columns = (x, x + width // 2, x + 3 * width // 4 - width // 14)
    for column, header in zip(columns, ("Item", "Qty", "Price")):
        draw.text((column, y), header, fill=(0, 0, 0), font=body)
    y += line
    for name, qty, price in items:
        for column, cell in zip(columns, (name, str(qty), f"{price:.2f}")):
            draw.text((column, y), cell, fill=(30, 30, 30), font=body)
        y += line
    draw.line((x, y, width - x, y), fill=(0, 0, 0), width=1)
    y += line // 2
    draw.text((x, y), f"Total: {total}", fill=(0, 0, 0), font=body)

    question_type = ("invoice_no", "date", "customer", "total", "quantity")[index % 5]
    if question_type == "invoice_no":
        question, answer = "What is the invoice number?", invoice_no
    elif question_type == "date":
        question, answer = "What is the date of the invoice?", date
    elif question_type == "customer":
        question, answer = "Who is the customer?", customer
    elif question_type == "total":
        question, answer = "What is the total amount?", total
    else:
        name, qty, _ = rng.choice(items)
        question, answer = f"How many units of {name} were ordered?", str(qty)
    return Sample(f"document-{seed}-{index}", "document", image, question, answer, question_type)


GENERATORS = {"shapes": shapes_sample, "document": document_sample}


def generate(kind: str, count: int, seed: int = 0) -> list[Sample]:
    """``count`` samples of ``kind`` ("shapes" or "document"), identical for identical arguments."""
    if kind not in GENERATORS:
        raise ValueError(f"kind must be one of {sorted(GENERATORS)}, got {kind!r}")
    return [GENERATORS[kind](seed, i) for i in range(count)]


def export(out_dir: str | Path, count: int = 20, seed: int = 0) -> Path:
    """Write every kind's samples as PNG files plus ``samples.jsonl`` under ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "samples.jsonl", "w") as f:
        for kind in GENERATORS:
            for sample in generate(kind, count, seed):
                path = out / f"{sample.question_id}.png"
                sample.image.save(path)
                record = {k: v for k, v in sample.record().items() if k != "image"}
                f.write(json.dumps({**record, "image": path.name}) + "\n")
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python synthetic.py OUT_DIR")
    print(export(sys.argv[1]))
