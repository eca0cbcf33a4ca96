"""Per-crop density and kept tokens of ``tokencorr`` on rendered pages, measured in one run.

Runs the tiny offline LLaVA-NeXT and the tiny offline mPLUG-DocOwl1.5 (random weights, DocOwl
at its real 448 px view geometry: the numbers show how budgets follow page content, not
accuracy) on four generated 672x672 pages and prints, per image and setting, the measured ratio
(kept / original visual tokens, newlines and ``vit_eos`` excluded), per-view density and kept
counts, and the compressor's own time. The DocOwl settings put the paper's regime (its own
allocation, or an exact ratio of 0.885: about 11.5% of tokens removed) next to stronger ratios.

    OMP_NUM_THREADS=1 python evals/tokencorr_density.py
"""

from __future__ import annotations

import copy
import platform
import random
import time

import torch
from PIL import Image, ImageDraw, ImageFont

import vtcompress
from vtcompress.integrations.docowl import mplug_owl2_prompt
from vtcompress.integrations.docowl.tiny import build_tiny_docowl, tiny_config
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


def run(model, processor, text: str, pages: dict[str, Image.Image], settings: list[TokenCorrConfig]) -> None:
    for cfg in settings:
        name = f"allocation={cfg.allocation} ratio={cfg.ratio:g} scale={cfg.scale} combine={cfg.combination}"
        print(f"\n== tokencorr {name}")
        with vtcompress.compressed(model, cfg) as handle:
            for label, img in pages.items():
                inputs = processor(images=[img], text=[text], return_tensors="pt")
                start = time.perf_counter()
                with torch.no_grad():
                    model(**inputs)
                total = time.perf_counter() - start
                im = handle.last_stats.images[0]
                views = " ".join(f"{v.info['density']:.2f}/{v.kept}" for v in im.views)
                print(
                    f"{label:>13}: {im.tokens_before} -> {im.tokens_after} tokens, measured ratio "
                    f"{im.kept_fraction:.3f}; views (global first) density/kept: {views}; "
                    f"compress {im.seconds * 1e3:.1f} ms, forward {total * 1e3:.0f} ms"
                )


def main() -> None:
    torch.manual_seed(0)
    pages = {"blank": page(0.0), "quarter text": page(0.25), "half text": page(0.5), "full text": page(1.0)}
    print(
        f"machine: {platform.machine()} CPU, {torch.get_num_threads()} torch threads, no GPU; "
        f"torch {torch.__version__}"
    )
    print("\n#### tiny random LLaVA-NeXT (2-layer CLIP tower, 336 px views of 24x24 patches)")
    model, processor = build_tiny_llava_next(seed=0)
    run(
        model,
        processor,
        "USER: <image>\nRead the page. ASSISTANT:",
        pages,
        [
            TokenCorrConfig(ratio=0.25, allocation="adaptive"),
            TokenCorrConfig(ratio=0.5, allocation="adaptive"),
            TokenCorrConfig(ratio=0.25, allocation="exact"),
            TokenCorrConfig.paper(),  # the figure's reading: n_c = ceil(rho N) draws, union with outliers
            TokenCorrConfig.paper(combine="inside"),  # the same n_c, outliers counted inside it
        ],
    )
    print("\n#### tiny random mPLUG-DocOwl1.5 (2-layer ViT, 448 px views of 32x32 patches, 1x4 groups)")
    visual = copy.deepcopy(tiny_config().visual_config)
    visual["visual_model"]["image_size"] = 448
    model, processor = build_tiny_docowl(seed=0, visual_config=visual)
    run(
        model,
        processor,
        mplug_owl2_prompt("Read the page."),
        pages,
        [
            TokenCorrConfig.paper(),  # the paper's regime, its own allocation
            TokenCorrConfig(ratio=0.885),  # the paper's operating point as an exact total
            TokenCorrConfig(ratio=0.5),  # the lmms-eval DocOwl model's default
            TokenCorrConfig(ratio=0.25),
        ],
    )


if __name__ == "__main__":
    main()
