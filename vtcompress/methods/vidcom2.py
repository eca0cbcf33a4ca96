"""VidCom² (Liu et al., "Video Compression Commander", EMNLP 2025, arXiv 2505.14454) for clips.

Frames that differ from the whole video get a larger share of the budget, and inside each frame
the tokens least similar to both the video and the frame are kept. For a clip ``X`` of shape
``[T, P, D]`` (P tokens per frame) and base ratio ``r``:

1. keep the ``int(D / 2)`` channels of lowest population variance over all ``T * P`` tokens;
2. L2-normalise every token over them; video centre = mean of all tokens, frame centre = mean of
   the frame's tokens;
3. ``sim(x, c) = sum_a exp(-||x - c||^2 / (2 a))`` for ``a`` in {1/8, 1/4, 1/2, 1, 2};
   ``v`` = sim to the video centre, ``f`` = sim to the frame centre;
4. frame score ``s_t = -mean_frame(v)``; ``p = softmax((s - max s) / 0.01)``;
   ``k_t = round(min(1, r (1 + p_t - mean p)) * P)`` (round half to even), at least 1;
5. each frame keeps its ``k_t`` tokens of lowest ``v + f``, in spatial order.

Allocations (``allocation``):

* ``"paper"``: steps 1-5 as the official ``token_compressor/vidcom2/vidcom2.py`` computes them,
  in the features' dtype, with the same ``topk`` calls (so exact ties break as the official code's
  do on the same device). The total is ``sum_t k_t``, close to but not always ``floor(r T P)``.
* ``"exact"`` (default): vLLM's reconciliation (``vllm/multimodal/video_prune/vidcom2.py``): k_t
  is also clipped at P, then the clip is brought to an exact total by dropping the kept tokens of
  highest ``v + f`` or adding the unkept ones of lowest. The total is a function of T, P and r
  alone (:func:`vtcompress.video.clip_keep_count`), so a processor knows it before the model runs;
  that is why it is the default, as for GlobalCom². As in vLLM, the drop step may take a frame's
  last token, leaving that frame with none.

Deviations, all deliberate:

* Counting (``count``): ``"floor"`` (default) takes the exact total as ``max(T, floor(r T P))``.
  vLLM computes ``int(T P (1 - q))`` with ``q = 1 - r`` in floating point, which is
  ``floor(r T P) - 1`` wherever ``1 - (1 - r) < r`` and ``r T P`` is whole (r = 0.1, P = 150,
  T = 4: 59, not 60); ``count="vllm"`` reproduces vLLM's count and its base ``1 - q`` exactly.
* Reconciliation ties: the drop / add step picks by a stable sort of ``v + f`` (lower index
  first among equal scores) where vLLM calls an unsorted ``topk``; only exact float ties differ.
* The official hooks run only at batch size 1 (larger batches are silently uncompressed);
  here every clip of a batch is compressed, each on its own.
* Images are refused (the official code compresses videos only).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from vtcompress.config import CompressionConfig, check_choice
from vtcompress.registry import register_method
from vtcompress.tokens import ImageTokens, ViewOutput
from vtcompress.video import (
    COUNT_RULES,
    VideoLayout,
    clip_keep_count,
    frames_of,
    outputs_from_frame_indices,
    require_clip,
)

ALPHAS = tuple(2.0**k for k in range(-3, 2))
"""Bandwidths of the multi-scale Gaussian similarity: 1/8, 1/4, 1/2, 1, 2."""
TEMPERATURE = 0.01
CHANNEL_FRACTION = 0.5


@dataclass
class VidCom2Config(CompressionConfig):
    """VidCom² on clips (see the module docstring): ``allocation`` "exact" | "paper",
    ``count`` "floor" | "vllm" (exact allocation only)."""

    media = ("video",)
    allocation: str = "exact"
    count: str = "floor"

    def validate(self) -> None:
        check_choice("allocation", self.allocation, ("exact", "paper"))
        check_choice("count", self.count, COUNT_RULES)

    def content_dependence(self) -> str:
        return "allocation='paper' (use allocation='exact')" if self.allocation == "paper" else ""

    def kept_count(self, layout: VideoLayout) -> int | None:
        """Tokens a clip keeps (exact allocation); None: the paper allocation's depends on content."""
        if self.is_off:
            return layout.num_tokens()
        if self.allocation == "paper":
            return None
        return clip_keep_count(layout.frames, layout.tokens_per_frame, self.ratio, self.count)


def low_variance_channels(x: Tensor, fraction: float = CHANNEL_FRACTION) -> Tensor:
    """``x`` [N, D] restricted to its ``int(D * fraction)`` lowest-variance channels ([N, D'])."""
    variances = x.var(dim=0, unbiased=False)
    index = torch.topk(variances, k=int(x.shape[-1] * fraction), largest=False).indices
    return x[:, index]


def gaussian_similarity(x: Tensor, centre: Tensor) -> Tensor:
    """``sum_a exp(-||x - c||^2 / (2 a))`` over :data:`ALPHAS`: [T, P, C] and a broadcastable
    centre -> [T, P]."""
    dist = ((x - centre) ** 2).sum(dim=-1)
    total = torch.exp(-dist / (2 * ALPHAS[0]))
    for a in ALPHAS[1:]:
        total = total + torch.exp(-dist / (2 * a))
    return total


def vidcom2_scores(frames: Tensor) -> tuple[Tensor, Tensor]:
    """Similarities to the video centre and to each frame's centre.

    Args:
        frames: [T, P, D] features of one clip.
    Returns:
        v, f: [T, P] each (steps 1-3 of the module docstring).
    """
    t, p, d = frames.shape
    sel = low_variance_channels(frames.reshape(t * p, d))
    x = F.normalize(sel.view(t, p, sel.shape[-1]), dim=-1)
    v = gaussian_similarity(x, x.mean(dim=(0, 1), keepdim=True))
    f = gaussian_similarity(x, x.mean(dim=1, keepdim=True))
    return v, f


def frame_keep_counts(v: Tensor, base: float, clip_at_frame: bool) -> Tensor:
    """long [T]: step 4's per-frame counts from ``v`` [T, P] (at least 1; at most P when
    ``clip_at_frame``, as vLLM clips; the official code's 1.0 scale clamp already implies it)."""
    scores = -v.mean(dim=-1)
    probs = F.softmax((scores - scores.max()) / TEMPERATURE, dim=0)
    scales = (base * (1 + probs - probs.mean())).clamp(max=1.0)
    counts = (scales * v.shape[1]).round().long().clamp(min=1)
    return counts.clamp(max=v.shape[1]) if clip_at_frame else counts


def select_per_frame(similarity: Tensor, counts: list[int]) -> list[Tensor]:
    """Per frame, the positions of its ``counts[t]`` lowest scores (long, ascending)."""
    return [
        torch.topk(similarity[t], k=k, largest=False, sorted=False).indices.sort().values
        for t, k in enumerate(counts)
    ]


def reconcile(similarity: Tensor, keep: Tensor, target: int) -> Tensor:
    """Bring bool ``keep`` [T, P] to ``target`` kept tokens: drop the kept ones of highest
    ``similarity`` [T, P], or add the unkept ones of lowest (stable: lower flat index first)."""
    flat_keep, flat_sim = keep.reshape(-1).clone(), similarity.reshape(-1)
    current = int(flat_keep.sum())
    if current > target:
        kept = flat_keep.nonzero().squeeze(1)
        order = torch.argsort(flat_sim[kept], descending=True, stable=True)
        flat_keep[kept[order[: current - target]]] = False
    elif current < target:
        free = (~flat_keep).nonzero().squeeze(1)
        order = torch.argsort(flat_sim[free], stable=True)
        flat_keep[free[order[: target - current]]] = True
    return flat_keep.view_as(keep)


def vidcom2_keep(
    frames: Tensor, ratio: float, allocation: str = "exact", count: str = "floor"
) -> list[Tensor]:
    """The positions each frame keeps.

    Args:
        frames: [T, P, D] one clip; ratio: base ratio r in (0, 1).
    Returns:
        per frame, long [k_t] positions in 0..P-1, ascending.
    """
    t, p, _ = frames.shape
    v, f = vidcom2_scores(frames)
    similarity = v + f
    if allocation == "paper":
        return select_per_frame(similarity, frame_keep_counts(v, ratio, clip_at_frame=False).tolist())
    base = 1.0 - (1.0 - ratio) if count == "vllm" else ratio
    counts = frame_keep_counts(v, base, clip_at_frame=True).tolist()
    keep = torch.zeros(t, p, dtype=torch.bool, device=frames.device)
    for i, index in enumerate(select_per_frame(similarity, counts)):
        keep[i, index] = True
    keep = reconcile(similarity, keep, clip_keep_count(t, p, ratio, count))
    return [row.nonzero().squeeze(1) for row in keep]


@register_method(
    "vidcom2", VidCom2Config, "VidCom²: frame-adaptive budgets, distinctive tokens per frame (video)"
)
def vidcom2(tokens: ImageTokens, config: VidCom2Config) -> list[ViewOutput]:
    require_clip(tokens, "vidcom2")
    frames = frames_of(tokens)
    return outputs_from_frame_indices(
        frames, vidcom2_keep(frames, config.ratio, config.allocation, config.count)
    )
