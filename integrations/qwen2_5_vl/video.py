"""Qwen2.5-VL videos: each clip encoded once, compressed as a :class:`~vtcompress.video.VideoLayout`
of temporal patches (:mod:`vtcompress.integrations.mrope_video`).

A clip's placeholders are one run of ``video_token_id``; its rotary positions step t by
``tokens_per_second * second_per_grid_ts``. The host keeps the kept tokens' own uncompressed
positions, as for images.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor
from transformers.modeling_outputs import BaseModelOutputWithPooling

from vtcompress.integrations.host import Host
from vtcompress.integrations.mrope_video import compress_clips


def encode_videos(
    host: Host, inner: Any, call: dict[str, Any], merge: int, patch_px: int
) -> tuple[BaseModelOutputWithPooling, list[Tensor]]:
    """Encode and compress every clip of the call; per clip, the kept placeholder indices (long
    CPU, ascending) of its run. Appends one stats entry per clip to ``host.stats.images``
    (``media="video"``: frames = temporal patches, views = frames)."""
    grid_thw = call["video_grid_thw"]
    encoded = inner.get_video_features(call["pixel_values_videos"], grid_thw, return_dict=True)
    clips = compress_clips(host, encoded.pooler_output, grid_thw.tolist(), merge, patch_px, "")
    return BaseModelOutputWithPooling(pooler_output=tuple(c.features for c in clips)), [
        c.index for c in clips
    ]
