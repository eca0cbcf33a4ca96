"""Qwen3-VL videos: each clip encoded once and compressed as a
:class:`~vtcompress.video.VideoLayout` of temporal patches
(:mod:`vtcompress.integrations.mrope_video`), its DeepStack features cut like its main features.

The prompt gives every temporal patch its own run: ``<{time:.1f} seconds>`` as text, then
``<|vision_start|>``, the patch's ``h' * w'`` video placeholders and ``<|vision_end|>``. A clip's
placeholders are therefore ``t`` runs with text between them; the host cuts them by their rank
among the row's video placeholders (the clip's run of ``t * h' * w'`` in frame-major order), so
timestamps and markers stay, and a frame whose tokens are all dropped keeps its timestamp and its
empty ``<|vision_start|><|vision_end|>`` pair. ``get_rope_index`` gives every temporal patch its
own start after the text before it (t constant within a patch, no time scaling: the timestamps
carry time); kept tokens keep those uncompressed positions.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from transformers.models.qwen3_vl.modeling_qwen3_vl import BaseModelOutputWithDeepstackFeatures

from vtcompress.integrations.host import Host
from vtcompress.integrations.mrope_video import KeptClip, compress_clips

NOTE = ", each run after its timestamp"


def cut_clip(features: Tensor, clip: KeptClip, cut_like) -> Tensor:
    """A clip's per-token features ([t * P, D], frame-major) cut to its kept tokens, in the order
    of ``clip.index``: per frame ``cut_like(frame_features, kept)`` (a merged token: the mean of
    its sources), then sorted as the clip's kept indices are."""
    p = clip.layout.tokens_per_frame
    parts = [cut_like(features[t * p : (t + 1) * p], out) for t, out in enumerate(clip.frames)]
    index = torch.cat([out.positions.detach().cpu().long() + t * p for t, out in enumerate(clip.frames)])
    return torch.cat(parts).index_select(0, torch.argsort(index).to(features.device))


def encode_videos(
    host: Host, inner: Any, call: dict[str, Any], merge: int, patch_px: int, cut_like
) -> tuple[BaseModelOutputWithDeepstackFeatures, list[Tensor]]:
    """Encode and compress every clip of the call: the kept main features and, cut the same way,
    every layer's DeepStack features; per clip, the kept indices (long CPU, ascending) among its
    video placeholders. One stats entry per clip (``media="video"``, frames = temporal patches)."""
    grid_thw = call["video_grid_thw"]
    encoded = inner.get_video_features(call["pixel_values_videos"], grid_thw, return_dict=True)
    clips = compress_clips(host, encoded.pooler_output, host.host_list(grid_thw), merge, patch_px, NOTE)
    deepstack = [
        tuple(cut_clip(features, clip, cut_like) for features, clip in zip(layer, clips))
        for layer in encoded.deepstack_features
    ]
    output = BaseModelOutputWithDeepstackFeatures(
        pooler_output=tuple(c.features for c in clips), deepstack_features=deepstack
    )
    return output, [c.index for c in clips]
