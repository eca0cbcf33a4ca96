"""What the demo draws for a LLaVA-NeXT image: each anyres view (thumbnail, crops) as the vision
tower saw it, with the crops' letterbox masks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image

from vtcompress.integrations.llava_next.layout import AnyResLayout

Picture = tuple[
    np.ndarray, tuple[int, int], Any
]  # (pixels [H, W, 3] uint8, (rows, cols), valid mask or None)


def anyres_pictures(
    engine: Any,
    image: Image.Image,
    inputs: Any,
    layout_for: Callable[[tuple[int, int]], AnyResLayout],
    tiles: Callable[[Image.Image, Any], list[np.ndarray]] | None = None,
) -> list[Picture]:
    """Per view of the first image: ``layout_for(image_size)`` gives the layout; ``tiles`` draws a
    shrunk crop map (a layout with ``resampled_from``) instead of the crops."""
    vision = engine.model.config.vision_config
    side = vision.image_size // vision.patch_size
    pixel_values = inputs["pixel_values"][0]
    if pixel_values.shape[0] == 1:
        layout = AnyResLayout.single_view(side)
    else:
        layout = layout_for((image.height, image.width))
    if getattr(layout, "resampled_from", None) and tiles is not None:
        pictures = engine.view_pixels(pixel_values[:1]) + tiles(image, layout)
    else:
        pictures = engine.view_pixels(pixel_values[: layout.num_views])
    valid = [None] + (
        [m.view(side, side).numpy() for m in layout.crop_valid_mask()] if layout.has_crops else []
    )
    seen = side * vision.patch_size  # SigLIP at 384 px sees 27 patches of 14: 378 px
    return [(p[:seen, :seen], (side, side), v) for p, v in zip(pictures, valid)]


def anyres_views(engine: Any, image: Image.Image, inputs: Any) -> list[Picture]:
    """The demo's ``demo_views`` hook for LLaVA-NeXT (see :class:`vtcompress.hosts.HostSpec`)."""
    return anyres_pictures(
        engine, image, inputs, lambda size: AnyResLayout.for_config(engine.model.config, size)
    )
