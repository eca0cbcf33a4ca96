"""What the demo draws for a LLaVA-OneVision image: LLaVA-NeXT's anyres views, and where OneVision
shrank a large crop map, the tiles of the shrunk map."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from vtcompress.integrations.llava_next.demo import Picture, anyres_pictures
from vtcompress.integrations.llava_onevision.layout import OneVisionLayout


def onevision_views(engine: Any, image: Image.Image, inputs: Any) -> list[Picture]:
    """The demo's ``demo_views`` hook for LLaVA-OneVision (see :class:`vtcompress.hosts.HostSpec`)."""
    cfg = engine.model.config
    vision = cfg.vision_config

    def layout_for(size: tuple[int, int]) -> OneVisionLayout:
        return OneVisionLayout.for_image(
            size,
            cfg.image_grid_pinpoints,
            vision.image_size,
            vision.patch_size,
            vision_aspect_ratio=cfg.vision_aspect_ratio,
        )

    return anyres_pictures(
        engine, image, inputs, layout_for, lambda im, layout: _tiles(im, layout, vision.patch_size)
    )


def _tiles(image: Image.Image, layout: OneVisionLayout, patch_px: int) -> list[np.ndarray]:
    """What each tile of a shrunk crop map shows: the image resized to one ``patch_px`` square
    per token of the map, centred in the tile grid (grey around it)."""
    (top, bottom), (left, right) = layout.valid_rows, layout.valid_cols
    p, side = patch_px, layout.side
    canvas = np.full((layout.rows * side * p, layout.cols * side * p, 3), 128, dtype=np.uint8)
    resized = image.resize(((right - left) * p, (bottom - top) * p), Image.Resampling.BICUBIC)
    canvas[top * p : bottom * p, left * p : right * p] = np.asarray(resized)
    size = side * p
    return [
        canvas[r * size : (r + 1) * size, c * size : (c + 1) * size]
        for r in range(layout.rows)
        for c in range(layout.cols)
    ]
