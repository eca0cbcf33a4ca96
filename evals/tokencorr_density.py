"""Per-crop density and kept tokens of ``tokencorr`` on rendered pages, measured in one run.

Runs the tiny offline LLaVA-NeXT (random weights: the numbers show how budgets follow page
content, not accuracy) on four generated 672x672 pages and prints, per image and setting, the
measured ratio (kept / original visual tokens, newlines excluded), per-crop density and kept
counts, and the compressor's own time.

    OMP_NUM_THREADS=1 python evals/tokencorr_density.py
"""

from __future__ import annotations

import platform
import random
import time

import torch
from PIL import Image, ImageDraw, ImageFont

import vtcompress
from vtcompress.integrations.llava_next.tiny import build_tiny_llava_next
from vtcompress.methods.tokencorr import TokenCorrConfig

PX = 672


def page(lines_filled: float, seed: int = 0) -> Image.Image:
    """A white page whose top ``lines_filled`` share carries lines of small text."""
    rng = random.Random(seed)
    img = Image.new("RGB", (PX, PX), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=14)
    letters = "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 "
    for y in range(4, int(PX * lines_filled) - 14, 17):
        draw.text((4, y), "".join(rng.choice(letters) for _ in range(PX // 7)), fill="black", font=font)
    return img


def main() -> None:
    torch.manual_seed(0)
    model, processor = build_tiny_llava_next(seed=0)
    pages = {"blank": page(0.0), "quarter text": page(0.25), "half text": page(0.5), "full text": page(1.0)}
    settings = [
        TokenCorrConfig(ratio=0.25, allocation="adaptive"),
        TokenCorrConfig(ratio=0.5, allocation="adaptive"),
        TokenCorrConfig(ratio=0.25, allocation="exact"),
        TokenCorrConfig.paper(),
    ]
    print(
        f"machine: {platform.machine()} CPU, {torch.get_num_threads()} torch threads, no GPU; "
        f"torch {torch.__version__}; model: tiny random LLaVA-NeXT (2-layer CLIP tower)"
    )
    text = "USER: <image>\nRead the page. ASSISTANT:"
    for cfg in settings:
        name = f"allocation={cfg.allocation} ratio={cfg.ratio:g} scale={cfg.scale}"
        print(f"\n== tokencorr {name}")
        with vtcompress.compressed(model, cfg) as handle:
            for label, img in pages.items():
                inputs = processor(images=[img], text=[text], return_tensors="pt")
                start = time.perf_counter()
                with torch.no_grad():
                    model(**inputs)
                total = time.perf_counter() - start
                im = handle.last_stats.images[0]
                crops = " ".join(f"{v.info['density']:.2f}/{v.kept}" for v in im.views[1:])
                print(
                    f"{label:>13}: {im.tokens_before} -> {im.tokens_after} tokens, measured ratio "
                    f"{im.kept_fraction:.3f}; crops density/kept: {crops}; "
                    f"compress {im.seconds * 1e3:.1f} ms, forward {total * 1e3:.0f} ms"
                )


if __name__ == "__main__":
    main()
