"""LLaVA-OneVision videos: each clip's pooled frames compressed as a :class:`~vtcompress.video.VideoLayout`.

transformers' ``get_video_features`` runs SigLIP on every frame (one view of ``image_size`` px,
no crops), projects, and pools each frame 2x2 (bilinear, ``ceil(side / 2)`` a side: 27x27 -> 14x14,
196 tokens at 384 px), then appends ONE ``image_newline`` per video: the prompt's run of video
placeholders is ``frames * 196 + 1`` long. A clip here is those ``frames x 14 x 14`` tokens; the
method keeps some of each frame's (frame-major, raster order) and the newline stays at the end, as
the official VidCom² hook and transformers do. Positions are 1-D, so the cut run is contiguous.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from transformers.modeling_outputs import BaseModelOutputWithPooling

from vtcompress.integrations.host import Host
from vtcompress.integrations.video_host import compress_clip_recorded
from vtcompress.tokens import ImageTokens
from vtcompress.video import VideoLayout, stack_kept


def pooled_side(image_size: int, patch_size: int) -> int:
    """Tokens a side of a pooled frame: ``ceil((image_size / patch_size) / 2)``."""
    return math.ceil((image_size // patch_size) / 2)


def compress_videos(host: Host, pooled: Tensor, frames: int, side: int, image_size: int) -> Tensor:
    """Compress every clip of ``pooled`` [B, frames * side^2 + 1, D] (the stock video features,
    newline last); returns [1, sum_b (kept_b + 1), D], the clips one after another (what the stock
    forward flattens anyway). Appends one stats entry per clip (``media="video"``)."""
    layout = VideoLayout(frames, (side, side))
    if pooled.shape[1] != layout.num_tokens() + 1:
        raise RuntimeError(f"{pooled.shape[1]} video features for {frames} frames of {side}x{side} + 1")
    parts = []
    for index, clip_features in enumerate(pooled):
        clip = ImageTokens(
            clip_features[:-1].view(frames, side * side, -1),
            layout,
            index=index,
            score_layer=host.score_layer,
            num_layers=host.num_layers,
        )
        note = f"{frames} frames of {side}x{side} pooled tokens"
        outs = compress_clip_recorded(host, clip, (image_size, image_size), 1, note)
        _, kept = stack_kept(outs, layout)
        parts += [kept, clip_features[-1:]]
    return torch.cat(parts)[None]


def encode_videos(
    host: Any, call: dict[str, Any], original_get_video_features: Any
) -> BaseModelOutputWithPooling:
    """The stock video features of the call, compressed (see :func:`compress_videos`)."""
    pixels = call["pixel_values_videos"]
    if pixels.dim() != 5:
        raise ValueError(
            "LLaVA-OneVision needs pixel_values_videos of shape (videos, frames, channels, height, width)"
        )
    keys = ("vision_feature_layer", "vision_feature_select_strategy")
    extra = {k: call[k] for k in keys if call.get(k) is not None}
    out = original_get_video_features(pixels, return_dict=True, **extra)
    vcfg = host.inner.config.vision_config
    side = pooled_side(vcfg.image_size, vcfg.patch_size)
    out.pooler_output = compress_videos(host, out.pooler_output, pixels.shape[1], side, vcfg.image_size)
    return out
