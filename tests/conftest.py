import functools

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


def make_image(width: int, height: int, seed: int = 0) -> Image.Image:
    """A deterministic picture with a few shapes, so attention scores are not flat."""
    gen = torch.Generator().manual_seed(seed)
    img = Image.new("RGB", (width, height), (235, 235, 230))
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x0, y0 = (torch.rand(2, generator=gen) * torch.tensor([width, height])).int().tolist()
        w, h = (torch.rand(2, generator=gen) * torch.tensor([width, height]) / 3 + 4).int().tolist()
        color = tuple((torch.rand(3, generator=gen) * 255).int().tolist())
        draw.rectangle([x0, y0, x0 + w, y0 + h], fill=color)
    return img


def doc_image(w: int, h: int, lines: int, seed: int = 0) -> Image.Image:
    """A white page with ``lines`` rows of black text-like marks (noise for texture)."""
    img = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(img)
    rng = np.random.default_rng(seed)
    for i in range(lines):
        y = 8 + i * 14
        x = 6
        while x < w - 20 and y < h - 10:
            wl = int(rng.integers(5, 25))
            draw.rectangle([x, y, x + wl, y + 7], fill=(0, 0, 0))
            x += wl + int(rng.integers(3, 8))
    return img


# (width, height): square, wide, tall, letterboxed wide, letterboxed tall
IMAGE_SIZES = {
    "square": (672, 672),
    "wide": (1000, 500),
    "tall": (300, 900),
    "letterbox_wide": (500, 300),
    "letterbox_tall": (300, 700),
}


@pytest.fixture(scope="session")
def tiny():
    from vtcompress.integrations.llava_next.tiny import build_tiny_llava_next

    return build_tiny_llava_next(seed=0)


def uncompressed(model):
    """A fixture body: ``model`` uncompressed before and after the test (``yield from``)."""
    import vtcompress

    def release() -> None:
        handle = vtcompress.get_handle(model)
        if handle is not None:
            handle.remove()

    release()
    yield model
    release()


@functools.cache
def tiny_qwen2_5_vl():
    """The tiny Qwen2.5-VL (seed 0) and its processor, built once per test session."""
    from vtcompress.integrations.qwen2_5_vl.tiny import build_tiny_qwen2_5_vl

    return build_tiny_qwen2_5_vl(seed=0)


@functools.cache
def tiny_qwen3_vl():
    """The tiny Qwen3-VL (seed 0) and its processor, built once per test session."""
    from vtcompress.integrations.qwen3_vl.tiny import build_tiny_qwen3_vl

    return build_tiny_qwen3_vl(seed=0)


def demo_engine(save_tiny, folder):
    """The demo engine on a tiny checkpoint that ``save_tiny(path)`` writes into ``folder``
    (CPU, one thread, two new tokens per answer)."""
    from vtcompress.integrations.demo.engine import DemoEngine

    torch.set_num_threads(1)
    path = save_tiny(folder / "tiny")
    return DemoEngine.from_pretrained(str(path), device="cpu", max_new_tokens=2)


@pytest.fixture
def model(tiny):
    """The session's tiny model, guaranteed uncompressed before and after the test."""
    yield from uncompressed(tiny[0])


@pytest.fixture
def processor(tiny):
    return tiny[1]


def prompt(question: str = "What is in the image?") -> str:
    return f"USER: <image>\n{question} ASSISTANT:"


def inputs_for(processor, sizes, questions=None):
    """Processor output for images of ``sizes`` ((width, height), image i drawn with seed i)."""
    images = [make_image(w, h, seed=i) for i, (w, h) in enumerate(sizes)]
    texts = [prompt(q) for q in (questions or ["What is in the image?"] * len(sizes))]
    return processor(images=images, text=texts, return_tensors="pt", padding=True)


@torch.no_grad()
def logits(model, inputs):
    return model(**inputs).logits
