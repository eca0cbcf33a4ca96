"""Video as a layout with a time axis: a clip is ``frames x grid`` tokens, frame-major raster order.

A host hands a clip to a method as an :class:`~vtcompress.tokens.ImageTokens` whose ``layout``
is a :class:`VideoLayout` and whose ``features`` are ``[T, P, D]`` (one view per frame,
``P = h * w`` tokens per frame). Methods return one :class:`~vtcompress.tokens.ViewOutput` per
frame (positions in the frame's raster order), so stats and splicing work as for images, with
frames in place of views. A "frame" is what the model gives one set of tokens: Qwen's temporal
patch (two video frames), LLaVA-OneVision's pooled frame.

Budgets. ``ratio`` counts every video token of a clip. A method that allocates per frame
(VidCom², EVS) does so itself; every other method gets a uniform split:

* :func:`clip_keep_count`: a clip keeps ``max(T, floor(r * T * P))`` tokens (never more than
  ``T * P``): at least as many tokens as frames, as vLLM's VidCom² count (the uniform split below
  gives every frame one; VidCom²'s exact reconciliation may still leave a frame with none).
* :func:`frame_budgets`: that total split evenly over the frames, the first ``total % T`` frames
  one more.

Image methods run per frame (:func:`compress_clip`): each frame is a one-view image of
``frame_budgets[t]`` tokens (the method's config with ``ratio = k_t / P``, which its
``floor(ratio * P)`` rule turns back into ``k_t``). A method declares whether it compresses clips
itself (``CompressionConfig.media``): video methods refuse images, with one line.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vtcompress.budget import keep_count
from vtcompress.config import CompressionConfig
from vtcompress.layout import GridLayout, UniformGridLayout
from vtcompress.pipeline import compress_images
from vtcompress.registry import MethodSpec
from vtcompress.tokens import ImageTokens, ViewOutput, keep_all, select_views

COUNT_RULES = ("floor", "vllm")
"""How a clip's exact total is counted: ``"floor"`` = ``floor(r * N)`` (vtcompress's integer
rule, :func:`~vtcompress.budget.keep_count`), ``"vllm"`` = ``int(N * (1 - q))`` with
``q = 1 - r`` in floating point, as vLLM's ``--video-pruning-rate`` counts (see
:func:`vllm_keep_count`)."""


@dataclass(frozen=True)
class VideoLayout(GridLayout):
    """One clip: ``frames`` frames of a ``grid = (h, w)`` token grid, every token present.

    As a :class:`~vtcompress.layout.Layout` the frames are the views (``rows = frames``,
    ``cols = 1``, no global view), so geometry, stats and packing code read it unchanged.
    """

    frames: int
    grid: tuple[int, int]
    global_view: bool = False
    patch_group: tuple[int, int] = (1, 1)

    def __post_init__(self) -> None:
        if self.frames < 1 or min(self.grid) < 1:
            raise ValueError(f"a clip needs at least one frame of at least 1x1 tokens, got {self}")

    @property
    def rows(self) -> int:  # type: ignore[override]
        return self.frames

    @property
    def cols(self) -> int:  # type: ignore[override]
        return 1

    @property
    def view_grid(self) -> tuple[int, int]:
        return self.grid

    @property
    def tokens_per_frame(self) -> int:
        return self.grid[0] * self.grid[1]

    def frame_layout(self) -> UniformGridLayout:
        """One frame as a one-view image (what image methods see when run per frame)."""
        return UniformGridLayout(0, 0, self.grid, global_view=True, patch_group=self.patch_group)

    def view_names(self) -> list[str]:
        return [f"frame {t}" for t in range(self.frames)]


def is_clip(tokens: ImageTokens) -> bool:
    return isinstance(tokens.layout, VideoLayout)


def require_clip(tokens: ImageTokens, method: str) -> VideoLayout:
    """The clip's layout; ValueError (one line) when ``tokens`` is an image."""
    if not is_clip(tokens):
        raise ValueError(
            f"method {method!r} compresses videos only; compress the images with an image method "
            "(e.g. 'uniform') in a separate call"
        )
    return tokens.layout


def vllm_keep_count(n: int, ratio: float) -> int:
    """``int(n * (1 - q))`` with ``q = 1 - ratio``, as vLLM counts: float error makes it
    ``floor(r n) - 1`` where ``1 - (1 - r)`` falls below ``r`` (r = 0.1, n = 600: 59)."""
    return int(n * (1.0 - (1.0 - ratio)))


def clip_keep_count(frames: int, tokens_per_frame: int, ratio: float, count: str = "floor") -> int:
    """Tokens a clip keeps: ``max(frames, c)`` where ``c`` is ``floor(r N)`` (``count="floor"``)
    or vLLM's float count (``"vllm"``), never above ``N = frames * tokens_per_frame``."""
    n = frames * tokens_per_frame
    if ratio >= 1.0:
        return n
    c = keep_count(n, ratio) if count == "floor" else vllm_keep_count(n, ratio)
    return min(n, max(frames, c))


def frame_budgets(layout: VideoLayout, ratio: float) -> list[int]:
    """Per frame, the tokens a uniformly budgeted method keeps (sums to :func:`clip_keep_count`)."""
    total = clip_keep_count(layout.frames, layout.tokens_per_frame, ratio)
    base, extra = divmod(total, layout.frames)
    return [base + (t < extra) for t in range(layout.frames)]


def clip_kept_count(config: CompressionConfig, layout: VideoLayout) -> int | None:
    """Tokens a clip of ``layout`` keeps under ``config``, known before the model runs, or None
    where the count depends on the content (VidCom²'s paper allocation). A video method's config
    says it (its ``kept_count`` of a clip layout); image methods run frame by frame keep
    :func:`clip_keep_count`."""
    if config.is_off:
        return layout.num_tokens()
    if "video" in config.media:
        return config.kept_count(layout)
    return clip_keep_count(layout.frames, layout.tokens_per_frame, config.ratio)


def clip_frame_counts(config: CompressionConfig, layout: VideoLayout) -> list[int] | None:
    """Per frame, the tokens a clip of ``layout`` keeps under ``config``, known before the model
    runs (a model that gives every frame its own placeholder run needs them), or None where the
    split over frames depends on the content (EVS, VidCom²: the total may still be fixed). A
    video method declares them with a ``frame_kept_counts(layout)`` method; image methods run
    frame by frame keep :func:`frame_budgets`."""
    if config.is_off:
        return [layout.tokens_per_frame] * layout.frames
    if splits_frames_by_content(config):
        return None
    if "video" in config.media:
        return list(config.frame_kept_counts(layout))
    return frame_budgets(layout, config.ratio)


def splits_frames_by_content(config: CompressionConfig) -> bool:
    """Whether ``config`` splits a clip's tokens over its frames by content (a video method that
    declares no ``frame_kept_counts``), so that no per-frame count is known before it runs."""
    return not config.is_off and "video" in config.media and not hasattr(config, "frame_kept_counts")


def frames_of(clip: ImageTokens) -> Tensor:
    """A clip's features as ``[T, P, D]`` (checked against its layout)."""
    layout = require_clip(clip, "video")
    t, p = layout.frames, layout.tokens_per_frame
    if clip.features.dim() != 3 or tuple(clip.features.shape[:2]) != (t, p):
        raise ValueError(
            f"clip {clip.index}: features {tuple(clip.features.shape)} do not match {t} frames x {p} tokens "
            "([T, P, D] expected)"
        )
    return clip.features


def outputs_from_frame_indices(features: Tensor, kept: list[Tensor]) -> list[ViewOutput]:
    """One ViewOutput per frame from per-frame kept positions (any order; emitted ascending).

    Args:
        features: [T, P, D]; kept: per frame, long [k_t] positions in 0..P-1.
    """
    return select_views(features, [k.detach().cpu().long().sort().values for k in kept])


def compress_clip(method: MethodSpec, config: CompressionConfig, clip: ImageTokens) -> list[ViewOutput]:
    """One clip's kept tokens per frame.

    Video methods (``"video" in config.media``) get the clip; image methods run on each frame as
    a one-view image of :func:`frame_budgets` tokens (frames of one budget go through the method's
    batched path together, where it has one). Ratio 1.0 keeps every token.
    """
    layout = require_clip(clip, config.method)
    features = frames_of(clip)
    if config.is_off:
        return keep_all(clip)
    if "video" in config.media:
        outs = method.compress(clip, config)
        if len(outs) != layout.frames:
            raise RuntimeError(
                f"method {config.method!r} returned {len(outs)} frames for a clip of {layout.frames}"
            )
        return outs
    p = layout.tokens_per_frame
    frame = layout.frame_layout()
    budgets = frame_budgets(layout, config.ratio)
    outs: list[ViewOutput | None] = [None] * layout.frames
    for k in sorted(set(budgets)):
        members = [t for t, b in enumerate(budgets) if b == k]
        frames = [
            ImageTokens(
                features[t : t + 1],
                frame,
                index=clip.index,
                score_layer=clip.score_layer,
                num_layers=clip.num_layers,
            )
            for t in members
        ]
        results = compress_images(method, config.replace(ratio=min(1.0, k / p)), frames)
        for t, result in zip(members, results):
            out = result.views[0]
            if out.num_kept != k:
                raise RuntimeError(
                    f"method {config.method!r} kept {out.num_kept} tokens of frame {t} for a budget of {k}"
                )
            outs[t] = out
    return outs  # type: ignore[return-value]


def stack_kept(outs: list[ViewOutput], layout: VideoLayout) -> tuple[Tensor, Tensor]:
    """Clip-wide kept indices (long CPU [k], ascending: frame * P + position) and features [k, D]."""
    p = layout.tokens_per_frame
    index = torch.cat([o.positions.detach().cpu().long() + t * p for t, o in enumerate(outs)])
    feats = torch.cat([o.features for o in outs])
    order = torch.argsort(index)
    return index[order], feats.index_select(0, order.to(feats.device))
