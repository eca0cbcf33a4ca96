"""Qwen2.5-VL videos: each clip encoded once, compressed as a :class:`~vtcompress.video.VideoLayout`.

The processor turns a video into ``video_grid_thw = (t, h, w)`` patches: ``t`` temporal patches
of 2 frames each, ``h x w`` 14 px patches per frame, which the merger turns into
``t x (h/2) x (w/2)`` tokens, one placeholder each in one run of ``video_token_id``, in
(t, row, col) order -- the order of ``get_video_features``'s output and of the model's rotary
positions (t scaled by ``tokens_per_second * second_per_grid_ts``). A clip's "frame" here is one
temporal patch. The host keeps the kept tokens' own uncompressed positions, as for images.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor
from transformers.modeling_outputs import BaseModelOutputWithPooling

from vtcompress.integrations.host import Host
from vtcompress.integrations.video_host import compress_clip_recorded
from vtcompress.tokens import ImageTokens
from vtcompress.video import VideoLayout, stack_kept


def clip_layout(grid_thw: list[int], merge: int) -> VideoLayout:
    """Layout of one row of ``video_grid_thw`` (t, h, w in patches)."""
    t, h, w = (int(x) for x in grid_thw)
    return VideoLayout(t, (h // merge, w // merge), patch_group=(merge, merge))


def check_video_call(call: dict[str, Any]) -> None:
    """ValueError (one line) for a video call the host cannot compress."""
    if call.get("video_grid_thw") is None:
        raise ValueError(
            "Qwen2.5-VL needs video_grid_thw with pixel_values_videos: pass the processor's output"
        )


def encode_videos(
    host: Host, inner: Any, call: dict[str, Any], merge: int, patch_px: int
) -> tuple[BaseModelOutputWithPooling, list[Tensor]]:
    """Encode and compress every clip of the call; per clip, the kept placeholder indices (long
    CPU, ascending) of its run. Appends one stats entry per clip to ``host.stats.images``
    (``media="video"``: frames = temporal patches, views = frames)."""
    grid_thw = call["video_grid_thw"]
    encoded = inner.get_video_features(call["pixel_values_videos"], grid_thw, return_dict=True)
    kept_features, kept_index = [], []
    for index, (features, thw) in enumerate(zip(encoded.pooler_output, grid_thw.tolist())):
        layout = clip_layout(thw, merge)
        if features.shape[0] != layout.num_tokens():
            raise RuntimeError(
                f"video {index}: {features.shape[0]} features for {layout.frames} x {layout.grid} tokens"
            )
        clip = ImageTokens(
            features.view(layout.frames, layout.tokens_per_frame, -1),
            layout,
            index=index,
            score_layer=host.score_layer,
            num_layers=host.num_layers,
        )
        px = patch_px * merge
        note = f"{layout.frames} temporal patches of 2 frames, {layout.tokens_per_frame} tokens each"
        outs = compress_clip_recorded(host, clip, (layout.grid[0] * px, layout.grid[1] * px), 0, note)
        index_kept, feats = stack_kept(outs, layout)
        kept_index.append(index_kept)
        kept_features.append(feats)
    return BaseModelOutputWithPooling(pooler_output=tuple(kept_features)), kept_index


def drop_video_inputs(call: dict[str, Any]) -> dict[str, Any]:
    """The call without the raw video inputs (the kept features and explicit positions replace them)."""
    return {
        k: v
        for k, v in call.items()
        if k not in ("pixel_values_videos", "video_grid_thw", "second_per_grid_ts")
    }
