"""Deterministic images and clips for the vLLM Qwen tests, the same on both runtimes."""

from __future__ import annotations

import numpy as np

from tests.conftest import make_image

FPS = 2.0  # frames per second of every test clip: second_per_grid_ts = 2 / FPS = 1.0


def image(spec: list[int]):
    """[width, height, seed] -> a PIL image."""
    w, h, seed = spec
    return make_image(w, h, seed=seed)


def clip(spec: list[int]) -> np.ndarray:
    """[width, height, frames, seed] -> uint8 [T, H, W, 3]: shapes that change from frame to frame
    (every other frame repeats, so near-duplicates exist for the video methods to find)."""
    w, h, frames, seed = spec
    return np.stack([np.asarray(make_image(w, h, seed=seed * 100 + t // 2)) for t in range(frames)])


def metadata(frames: int) -> dict:
    return {
        "fps": FPS,
        "total_num_frames": frames,
        "frames_indices": list(range(frames)),
        "duration": frames / FPS,
        "video_backend": "opencv",
    }
