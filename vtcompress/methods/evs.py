"""EVS (efficient video sampling) as vLLM prunes videos (``vllm/multimodal/video_prune/evs.py``).

A token that looks like the token at the same position in the previous frame adds little, so
for a clip ``[T, P, D]`` (frames of an ``h x w`` grid, P = h w):

1. dissimilarity ``d[t, i] = 1 - cos(x[t, i], x[t - 1, i])`` for t >= 1, and 255 for every
   token of frame 0 (so the first frame is always kept whole);
2. a stable descending argsort of ``d`` over the whole clip in (T, H, W) order;
3. the first ``max(P, c)`` tokens are kept, ``c`` the clip's count; kept tokens stay in
   spatial order inside each frame.

The selection is vLLM's, step for step (cosine and argsort in the features' dtype). The total
is exact (a function of T, P and r). Deviation: ``count="floor"`` (default) takes
``c = floor(r T P)``; vLLM computes ``int(T P (1 - q))`` with ``q = 1 - r`` in floating point,
one token fewer wherever ``1 - (1 - r) < r`` and ``r T P`` is whole; ``count="vllm"`` follows
vLLM. Images are refused (nothing to compare a single frame with).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from vtcompress.budget import keep_count
from vtcompress.config import CompressionConfig, check_choice
from vtcompress.registry import register_method
from vtcompress.tokens import ImageTokens, ViewOutput
from vtcompress.video import (
    COUNT_RULES,
    VideoLayout,
    frames_of,
    outputs_from_frame_indices,
    require_clip,
    vllm_keep_count,
)

FIRST_FRAME_SCORE = 255.0


@dataclass
class EVSConfig(CompressionConfig):
    """EVS on clips: ``count`` "floor" | "vllm" (see the module docstring)."""

    media = ("video",)
    count: str = "floor"

    def validate(self) -> None:
        check_choice("count", self.count, COUNT_RULES)

    def kept_count(self, layout: VideoLayout) -> int:
        if self.is_off:
            return layout.num_tokens()
        return evs_keep_count(layout.frames, layout.tokens_per_frame, self.ratio, self.count)


def evs_keep_count(frames: int, tokens_per_frame: int, ratio: float, count: str = "floor") -> int:
    """Tokens EVS keeps of a clip: ``max(P, c)`` (the first frame whole; see the module docstring)."""
    n = frames * tokens_per_frame
    c = keep_count(n, ratio) if count == "floor" else vllm_keep_count(n, ratio)
    return min(n, max(tokens_per_frame, c))


def evs_dissimilarity(frames: Tensor) -> Tensor:
    """[T, P, D] -> [T, P]: 1 - cosine to the same position in the previous frame; 255 in frame 0."""
    d = 1 - F.cosine_similarity(frames[1:], frames[:-1], dim=-1)
    first = torch.full_like(frames[:1, :, 0], FIRST_FRAME_SCORE)
    return torch.cat([first, d], dim=0)


def evs_keep_mask(frames: Tensor, ratio: float, count: str = "floor") -> Tensor:
    """bool [T, P]: the tokens EVS keeps of one clip ``frames`` [T, P, D]."""
    t, p, _ = frames.shape
    d = evs_dissimilarity(frames).reshape(-1)
    order = torch.argsort(d, descending=True, stable=True)
    mask = torch.zeros(t * p, dtype=torch.bool, device=frames.device)
    mask[order[: evs_keep_count(t, p, ratio, count)]] = True
    return mask.view(t, p)


@register_method("evs", EVSConfig, "EVS: drop tokens like the previous frame's (vLLM's video pruning)")
def evs(tokens: ImageTokens, config: EVSConfig) -> list[ViewOutput]:
    require_clip(tokens, "evs")
    frames = frames_of(tokens)
    mask = evs_keep_mask(frames, config.ratio, config.count)
    return outputs_from_frame_indices(frames, [row.nonzero().squeeze(1) for row in mask])
