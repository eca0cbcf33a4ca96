"""Deterministic images and clips for the vLLM Qwen tests, the same on both runtimes."""

from __future__ import annotations

import numpy as np
from PIL import Image

from tests.conftest import make_image

FPS = 2.0  # frames per second of every test clip: second_per_grid_ts = 2 / FPS = 1.0


def noisy(picture, seed: int) -> np.ndarray:
    """uint8 [H, W, 3]: ``picture`` with seeded pixel noise. Without it the flat background
    gives many identical tokens, whose exact ties each runtime's last-bit rounding breaks its own
    way; with it the methods' choices do not hang on rounding."""
    rng = np.random.default_rng(seed)
    pixels = np.asarray(picture, dtype=np.int16) + rng.integers(-24, 25, size=np.asarray(picture).shape)
    return pixels.clip(0, 255).astype(np.uint8)


def image(spec: list[int]):
    """[width, height, seed] -> a PIL image."""
    w, h, seed = spec
    return Image.fromarray(noisy(make_image(w, h, seed=seed), seed))


def clip(spec: list[int]) -> np.ndarray:
    """[width, height, frames, seed] -> uint8 [T, H, W, 3]: shapes that change every other frame,
    fresh noise on every frame (near-duplicate frames for the video methods to find)."""
    w, h, frames, seed = spec
    return np.stack(
        [noisy(make_image(w, h, seed=seed * 100 + t // 2), seed * 100 + t) for t in range(frames)]
    )


def metadata(frames: int) -> dict:
    return {
        "fps": FPS,
        "total_num_frames": frames,
        "frames_indices": list(range(frames)),
        "duration": frames / FPS,
        "video_backend": "opencv",
    }
