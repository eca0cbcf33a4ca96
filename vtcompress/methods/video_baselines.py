"""Video baselines that VidCom²'s code compares with, their pre-LLM parts, as its Qwen branch runs them
(``token_compressor/<name>/core.py`` of ``xuyang-liu16/VidCom2``, branch ``qwen``).

``dycoke_ttm`` -- DyCoke's temporal token merging (TTM), on a clip ``[T, P, D]``, keep ratio r:

* frames pair up (0, 1), (2, 3), ...: the first of a pair is kept whole; the second keeps its
  ``n = int(r' P)`` tokens least cosine-similar to the same position in the first;
* then for every ``i = 0, 4, 8, ... < T - 4`` frame ``i + 2`` (kept whole so far) keeps its ``n``
  tokens least similar to frame ``i``;
* with an odd T the last frame has no partner and the official code keeps none of it
  (``unpaired="drop"``); ``unpaired="prune"`` keeps its ``n`` tokens least similar to frame
  ``T - 2`` instead (a deviation, off by default);
* ``r' = 1 - (1 - r)`` in floating point, as the official hook derives it from its merge ratio
  (``int(r' P)`` is one lower than ``floor(r P)`` for some r, e.g. r = 0.1, P = 150).

The count depends on T, P and r only. DyCoke's second stage (dynamic KV-cache pruning inside the
language model) is not part of this pre-LLM baseline.

``visionzip_video`` -- VisionZip on every frame, with the feature L2 norm in place of [CLS]
attention (the Qwen models have no [CLS] token; the official Qwen branch does the same): a frame
keeps ``m = max(1, int(r P))`` tokens, ``d = max(1, int(m * dominant))`` dominant ones (largest
norm) and ``m - d`` contextual ones: among the other tokens, the ``m - d`` of highest density
(mean cosine similarity to their ``neighbors`` nearest other tokens) are anchors, every other
token joins the anchor it is most cosine-similar to, and each contextual token is the plain mean
of its group (an anchor with no group is itself), standing at the anchor's position. Count per
frame ``m``, so per clip ``T m``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from vtcompress.config import CompressionConfig, check_choice
from vtcompress.registry import register_method
from vtcompress.tokens import ImageTokens, ViewOutput
from vtcompress.video import VideoLayout, frames_of, outputs_from_frame_indices, require_clip


@dataclass
class DyCokeTTMConfig(CompressionConfig):
    """DyCoke's temporal token merging on clips (see the module docstring)."""

    media = ("video",)
    unpaired: str = "drop"

    def validate(self) -> None:
        check_choice("unpaired", self.unpaired, ("drop", "prune"))

    def kept_count(self, layout: VideoLayout) -> int:
        if self.is_off:
            return layout.num_tokens()
        return dycoke_ttm_count(layout.frames, layout.tokens_per_frame, self.ratio, self.unpaired)

    def frame_kept_counts(self, layout: VideoLayout) -> list[int]:
        """Per frame, the tokens kept (a function of the layout: which frames are pruned is fixed)."""
        if self.is_off:
            return [layout.tokens_per_frame] * layout.frames
        return dycoke_ttm_frame_counts(layout.frames, layout.tokens_per_frame, self.ratio, self.unpaired)


@dataclass
class VisionZipVideoConfig(CompressionConfig):
    """VisionZip per frame with L2-norm scores (see the module docstring)."""

    media = ("video",)
    dominant: float = 0.6
    neighbors: int = 5

    def validate(self) -> None:
        if not 0.0 < self.dominant <= 1.0:
            raise ValueError(
                f"dominant must be in (0, 1] (the kept tokens' dominant share), got {self.dominant}"
            )
        if self.neighbors < 1:
            raise ValueError(f"neighbors must be a whole number >= 1, got {self.neighbors}")

    def kept_count(self, layout: VideoLayout) -> int:
        if self.is_off:
            return layout.num_tokens()
        return sum(self.frame_kept_counts(layout))

    def frame_kept_counts(self, layout: VideoLayout) -> list[int]:
        """Per frame, the tokens kept: ``m`` each (every token when off)."""
        if self.is_off:
            return [layout.tokens_per_frame] * layout.frames
        return [max(1, int(layout.tokens_per_frame * self.ratio))] * layout.frames


def _least_similar(similarity: Tensor, n: int) -> Tensor:
    return similarity.topk(min(n, similarity.numel()), largest=False).indices


def dycoke_ttm_keep(frames: Tensor, ratio: float, unpaired: str = "drop") -> list[Tensor]:
    """Per frame, the positions TTM keeps (long, ascending) of one clip ``frames`` [T, P, D]."""
    t, p, _ = frames.shape
    everything = torch.arange(p, device=frames.device)
    if t == 1:
        return [everything]
    n = int((1.0 - (1.0 - ratio)) * p)
    keep: list[Tensor] = [everything[:0]] * t
    for i in range(0, t - 1, 2):
        a, b = F.normalize(frames[i], dim=1), F.normalize(frames[i + 1], dim=1)
        keep[i] = everything
        keep[i + 1] = _least_similar(F.cosine_similarity(a, b, dim=1), n)
    for i in range(0, t - 4, 4):
        keep[i + 2] = _least_similar(F.cosine_similarity(frames[i], frames[i + 2], dim=1), n)
    if t % 2 and unpaired == "prune":
        keep[t - 1] = _least_similar(F.cosine_similarity(frames[t - 2], frames[t - 1], dim=1), n)
    return [k.sort().values for k in keep]


def dycoke_ttm_frame_counts(
    frames: int, tokens_per_frame: int, ratio: float, unpaired: str = "drop"
) -> list[int]:
    """Per frame, the tokens TTM keeps of a clip (a function of its shape and r alone, as
    :func:`dycoke_ttm_keep` assigns them)."""
    if frames == 1:
        return [tokens_per_frame]
    n = min(int((1.0 - (1.0 - ratio)) * tokens_per_frame), tokens_per_frame)
    counts = [0] * frames
    for i in range(0, frames - 1, 2):
        counts[i], counts[i + 1] = tokens_per_frame, n
    for i in range(0, frames - 4, 4):
        counts[i + 2] = n
    if frames % 2 and unpaired == "prune":
        counts[frames - 1] = n
    return counts


def dycoke_ttm_count(frames: int, tokens_per_frame: int, ratio: float, unpaired: str = "drop") -> int:
    """Tokens TTM keeps of a clip (a function of its shape and r alone)."""
    return sum(dycoke_ttm_frame_counts(frames, tokens_per_frame, ratio, unpaired))


@register_method(
    "dycoke_ttm", DyCokeTTMConfig, "DyCoke's temporal token merging, pre-LLM part (video baseline)"
)
def dycoke_ttm(tokens: ImageTokens, config: DyCokeTTMConfig) -> list[ViewOutput]:
    require_clip(tokens, "dycoke_ttm")
    frames = frames_of(tokens)
    return outputs_from_frame_indices(frames, dycoke_ttm_keep(frames, config.ratio, config.unpaired))


def visionzip_frame(
    frame: Tensor, keep: int, dominant: float, neighbors: int
) -> tuple[Tensor, Tensor, Tensor]:
    """One frame [P, D] -> positions (long [m], ascending), features [m, D], sizes (long [m])."""
    p = frame.shape[0]
    n_dom = min(p, max(1, int(keep * dominant)))
    n_ctx = keep - n_dom
    norms = frame.norm(dim=-1)
    dom = torch.topk(norms, k=n_dom).indices.sort().values
    positions, feats = [dom], [frame[dom]]
    sizes = [torch.ones(n_dom, dtype=torch.long, device=frame.device)]
    rest_mask = torch.ones(p, dtype=torch.bool, device=frame.device)
    rest_mask[dom] = False
    rest = rest_mask.nonzero().squeeze(1)
    if n_ctx > 0 and rest.numel():
        x = frame[rest]
        unit = F.normalize(x, dim=-1)
        sim = unit @ unit.T
        k = min(neighbors + 1, x.shape[0])
        density = sim.topk(k, dim=1).values[:, 1:].mean(dim=1)
        anchors = torch.topk(density, k=min(n_ctx, x.shape[0])).indices.sort().values
        if anchors.numel() < x.shape[0]:
            owner = (unit @ F.normalize(x[anchors], dim=-1).T).argmax(dim=1)
            groups = [owner == j for j in range(anchors.numel())]
            # The plain mean of each group, as the official code takes it (an empty group: the anchor).
            merged = torch.stack([x[g].mean(dim=0) if g.any() else x[a] for g, a in zip(groups, anchors)])
            group = torch.stack([g.sum().clamp(min=1) for g in groups])
        else:
            merged, group = x[anchors], torch.ones_like(anchors)
        positions.append(rest[anchors])
        feats.append(merged)
        sizes.append(group)
    pos = torch.cat(positions)
    order = torch.argsort(pos)
    return pos[order], torch.cat(feats)[order], torch.cat(sizes)[order]


@register_method(
    "visionzip_video", VisionZipVideoConfig, "VisionZip per frame, L2-norm scores (video baseline)"
)
def visionzip_video(tokens: ImageTokens, config: VisionZipVideoConfig) -> list[ViewOutput]:
    require_clip(tokens, "visionzip_video")
    frames = frames_of(tokens)
    keep = max(1, int(frames.shape[1] * config.ratio))
    outs = []
    for frame in frames:
        pos, feats, sizes = visionzip_frame(frame, keep, config.dominant, config.neighbors)
        outs.append(ViewOutput(positions=pos.cpu(), features=feats, sizes=sizes.cpu()))
    return outs
