"""Videos on the M-RoPE hosts (Qwen2.5-VL, Qwen3-VL): a clip's pixels built without the video
processor, and every clip of a call compressed on its own budget.

The processors turn a video into ``video_grid_thw = (t, h, w)`` patches: ``t`` temporal patches
of 2 frames each, ``h x w`` patches per frame, which the 2x2 merger turns into
``t x (h/2) x (w/2)`` tokens in (t, row, col) order -- the order of ``get_video_features``'s
output, of the prompt's video placeholders and of the model's rotary positions. A clip's "frame"
here is one temporal patch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from vtcompress.integrations.host import Host
from vtcompress.integrations.video_host import compress_clip_recorded
from vtcompress.tokens import ImageTokens, ViewOutput
from vtcompress.video import VideoLayout, stack_kept


def frame_patches(
    frames: list[Image.Image], image_processor: Any, height: int, width: int
) -> tuple[Tensor, tuple[int, int, int]]:
    """``(pixel_values_videos [t * h * w, C * 2 * p * p], (t, h, w))`` for one clip whose frames
    are resized (bicubic) to ``height x width`` px, rescaled and normalised with the image
    processor's mean and std. An odd frame count repeats the last frame (the temporal patch is 2
    frames). Patches are in the processors' 2x2-merge order."""
    patch, merge = image_processor.patch_size, image_processor.merge_size
    temporal = image_processor.temporal_patch_size
    mean = np.asarray(image_processor.image_mean, dtype=np.float32)[:, None, None]
    std = np.asarray(image_processor.image_std, dtype=np.float32)[:, None, None]
    arrays = []
    for frame in frames:
        resized = frame.convert("RGB").resize((width, height), Image.Resampling.BICUBIC)
        arrays.append(
            (np.asarray(resized, dtype=np.float32).transpose(2, 0, 1) * image_processor.rescale_factor - mean)
            / std
        )
    while len(arrays) % temporal:
        arrays.append(arrays[-1])
    stack = torch.from_numpy(np.stack(arrays))  # [T, C, H, W]
    t, c = stack.shape[0] // temporal, stack.shape[1]
    gh, gw = height // patch, width // patch
    patches = stack.reshape(t, temporal, c, gh // merge, merge, patch, gw // merge, merge, patch)
    patches = patches.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return patches.reshape(t * gh * gw, c * temporal * patch * patch), (t, gh, gw)


def clip_layout(grid_thw: Sequence[int], merge: int) -> VideoLayout:
    """Layout of one row of ``video_grid_thw`` (t, h, w in patches)."""
    t, h, w = (int(x) for x in grid_thw)
    return VideoLayout(t, (h // merge, w // merge), patch_group=(merge, merge))


@dataclass
class KeptClip:
    """One compressed clip: its layout, its kept tokens per frame (as the method returned them),
    and clip-wide the kept placeholder indices (long CPU [k], ascending: frame * P + position)
    with their features [k, D] in that order."""

    layout: VideoLayout
    frames: list[ViewOutput]
    index: Tensor
    features: Tensor


def compress_clips(
    host: Host, features: Sequence[Tensor], grid_thw: list[list[int]], merge: int, patch_px: int, note: str
) -> list[KeptClip]:
    """Compress every clip of a call on its own budget (``features[i]``: clip i's merged tokens
    ``[t * h' * w', D]``; ``grid_thw``: its rows as numbers). Appends one stats entry per clip to
    ``host.stats.images`` (``media="video"``, frames = temporal patches; ``note`` names the
    family's frames)."""
    clips = []
    for index, (clip_features, thw) in enumerate(zip(features, grid_thw)):
        layout = clip_layout(thw, merge)
        if clip_features.shape[0] != layout.num_tokens():
            raise RuntimeError(
                f"video {index}: {clip_features.shape[0]} features for {layout.frames} x {layout.grid} tokens"
            )
        clip = ImageTokens(
            clip_features.view(layout.frames, layout.tokens_per_frame, -1),
            layout,
            index=index,
            score_layer=host.score_layer,
            num_layers=host.num_layers,
        )
        px = patch_px * merge
        text = f"{layout.frames} temporal patches of 2 frames, {layout.tokens_per_frame} tokens each{note}"
        outs = compress_clip_recorded(host, clip, (layout.grid[0] * px, layout.grid[1] * px), 0, text)
        kept_index, kept_features = stack_kept(outs, layout)
        clips.append(KeptClip(layout, outs, kept_index, kept_features))
    return clips
