"""What the demo draws for an image of an M-RoPE host (:mod:`vtcompress.integrations.mrope_host`):
its one view of merged tokens (2x2 patches each), rebuilt from the processor's flattened patches."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image


def merged_views(
    engine: Any, image: Image.Image, inputs: Any
) -> list[tuple[np.ndarray, tuple[int, int], None]]:
    """The demo's ``demo_views`` hook of the M-RoPE hosts (see :class:`vtcompress.hosts.HostSpec`)."""
    vision = engine.model.config.vision_config
    px = vision.patch_size * vision.spatial_merge_size
    pixels = merged_token_pixels(engine, inputs["pixel_values"], inputs["image_grid_thw"][0])
    return [(pixels, (pixels.shape[0] // px, pixels.shape[1] // px), None)]


def merged_token_pixels(engine: Any, pixel_values: torch.Tensor, grid_thw: torch.Tensor) -> np.ndarray:
    """The first image as the tower saw it, [H, W, 3] uint8.

    The processor flattens patches in merge-block order: ``pixel_values`` rows run over
    (t, rows/m, cols/m, m, m) and each row holds (channel, temporal, patch, patch) values.
    """
    vision = engine.model.config.vision_config
    t, h, w = (int(x) for x in grid_thw)
    m, p = vision.spatial_merge_size, vision.patch_size
    temporal = pixel_values.shape[-1] // (3 * p * p)
    x = pixel_values[: t * h * w].float().cpu().reshape(t, h // m, w // m, m, m, 3, temporal, p, p)
    x = x[0, :, :, :, :, :, 0]  # first frame: [h/m, w/m, m, m, 3, p, p]
    x = x.permute(4, 0, 2, 5, 1, 3, 6).reshape(3, h * p, w * p)
    return engine.unnormalize(x.numpy())
