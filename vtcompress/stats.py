"""What a compression call did, per image and per view (read from ``handle.last_stats``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class ViewStats:
    """One view: ``name`` is "thumbnail" or "crop r,c" (0-based row, column of the crop grid).

    original: tokens the uncompressed model sees in this view (after unpadding);
    kept: tokens after compression; positions: (row, col) in the view's side x side grid of each
    kept token; sizes: original patches per token (merging methods) or None; sources: per kept
    token, the (row, col) of every original patch merged into it (merging methods that report
    them) or None.
    """

    name: str
    original: int
    kept: int
    positions: list[tuple[int, int]]
    sizes: list[int] | None = None
    info: dict = field(default_factory=dict)
    sources: list[list[tuple[int, int]]] | None = None


@dataclass
class ImageStats:
    """One image, or one video clip (``media="video"``: the views are its frames, ``grid`` is
    (frames, 1)). tokens_* exclude newlines (the ratio convention); newlines_* count them."""

    index: int
    image_size: tuple[int, int]
    grid: tuple[int, int]
    method: str
    ratio: float
    tokens_before: int
    tokens_after: int
    newlines_before: int
    newlines_after: int
    seconds: float
    views: list[ViewStats]
    passthrough: bool = False
    note: str = ""
    media: str = "image"

    @property
    def kept_fraction(self) -> float:
        return self.tokens_after / self.tokens_before if self.tokens_before else 1.0


def _get_views(self: ImageStats) -> list[ViewStats]:
    if callable(self._views):  # built on first read: compression itself never pays for it
        self._views = self._views()
    return self._views


def _set_views(self: ImageStats, views: list[ViewStats] | Callable[[], list[ViewStats]]) -> None:
    self._views = views


# ``views`` may be given as a function that builds them: it runs when they are first read.
ImageStats.views = property(_get_views, _set_views)


@dataclass
class SampleStats:
    """One sequence of the batch: prompt lengths and the decoder's analytic prefill FLOPs."""

    index: int
    length_before: int
    length_after: int
    prefill_flops_before: float
    prefill_flops_after: float

    @property
    def flops_saved(self) -> float:
        return self.prefill_flops_before - self.prefill_flops_after


@dataclass
class CompressionStats:
    """Everything measured during the last forward/generate call that saw images."""

    images: list[ImageStats] = field(default_factory=list)
    samples: list[SampleStats] = field(default_factory=list)
    vision_seconds: float = 0.0
    compress_seconds: float = 0.0

    @property
    def tokens_before(self) -> int:
        return sum(i.tokens_before for i in self.images)

    @property
    def tokens_after(self) -> int:
        return sum(i.tokens_after for i in self.images)

    def summary(self) -> str:
        lines = []
        for im in self.images:
            extra = f" ({im.note})" if im.note else ""
            newlines = f" (+{im.newlines_after} newlines)" if im.newlines_before else ""
            lines.append(
                f"{im.media} {im.index}: {im.tokens_before} -> {im.tokens_after} visual tokens"
                f"{newlines}, {im.method} r={im.ratio:g}, "
                f"{im.seconds * 1e3:.2f} ms{extra}"
            )
        return "\n".join(lines)
