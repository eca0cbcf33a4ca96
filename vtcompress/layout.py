"""How the views of one image are laid out, as every compressor sees them (host-agnostic).

A host (LLaVA-NeXT, DocOwl, ...) describes each image by a :class:`Layout`: an optional global
view first (a downscaled whole image: LLaVA-NeXT's thumbnail, DocOwl's global view), then
``rows x cols`` crops in row-major order, each a ``view_grid`` token grid. The crops tile a full
grid of ``rows*h x cols*w`` tokens of which only the rectangle ``valid_rows x valid_cols``
exists (hosts that letterbox, as LLaVA-NeXT does, drop the padded tokens). ``patch_group`` is
how many vision patches make one token (DocOwl's H-Reducer: 1x4); the q/k a host captures are
per patch.

:class:`GridLayout` implements every derived quantity once; a host's layout subclasses it and
only says how it is built from an image.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import ClassVar, Literal, Protocol, runtime_checkable

import torch
from torch import Tensor

NewlinePolicy = Literal["unpadded", "padded", "none"]
NEWLINE_POLICIES: tuple[str, ...] = ("unpadded", "padded", "none")
"""Packing options of hosts that end token rows with a newline token (LLaVA-NeXT)."""


@runtime_checkable
class Layout(Protocol):
    """What a compressor may know of an image's views (see the module docstring)."""

    rows: int
    cols: int

    @property
    def view_grid(self) -> tuple[int, int]: ...
    @property
    def global_view(self) -> bool: ...
    @property
    def patch_group(self) -> tuple[int, int]: ...
    @property
    def valid_rows(self) -> tuple[int, int]: ...
    @property
    def valid_cols(self) -> tuple[int, int]: ...
    @property
    def num_views(self) -> int: ...
    @property
    def has_crops(self) -> bool: ...
    @property
    def view_tokens(self) -> int: ...
    def crop_valid_mask(self, device: torch.device | str | None = None) -> Tensor: ...
    def view_counts(self) -> list[int]: ...
    def num_tokens(self) -> int: ...
    def view_names(self) -> list[str]: ...


class GridLayout:
    """Derived geometry shared by every host's layout.

    Subclasses are frozen dataclasses (hashable: masks and counts are cached per layout) that
    define ``rows``, ``cols``, ``global_view``, ``patch_group`` and ``view_grid`` (fields or
    class variables), and ``valid_rows`` / ``valid_cols`` where not every crop token exists.
    """

    rows: int
    cols: int
    global_view: bool
    patch_group: tuple[int, int]
    global_name: ClassVar[str] = "thumbnail"

    @property
    def view_grid(self) -> tuple[int, int]:
        raise NotImplementedError

    @property
    def valid_rows(self) -> tuple[int, int]:
        return (0, self.rows * self.view_grid[0])

    @property
    def valid_cols(self) -> tuple[int, int]:
        return (0, self.cols * self.view_grid[1])

    @property
    def num_crops(self) -> int:
        return self.rows * self.cols

    @property
    def num_views(self) -> int:
        return int(self.global_view) + self.num_crops

    @property
    def has_crops(self) -> bool:
        """True when view 0 has other views beside it (methods then treat view 0 as global)."""
        return self.num_views > 1

    @property
    def view_tokens(self) -> int:
        h, w = self.view_grid
        return h * w

    @property
    def unpadded_shape(self) -> tuple[int, int]:
        return (self.valid_rows[1] - self.valid_rows[0], self.valid_cols[1] - self.valid_cols[0])

    def crop_valid_mask(self, device: torch.device | str | None = None) -> Tensor:
        """[rows*cols, h*w] bool: which tokens of each crop exist (a fresh copy)."""
        return _crop_valid_mask(self).to(device, copy=True)

    def view_counts(self) -> list[int]:
        """Tokens per view that the uncompressed model sees (no newlines)."""
        return list(_view_counts(self))

    def num_tokens(self) -> int:
        """Visual tokens of the uncompressed image, newlines excluded."""
        return sum(self.view_counts())

    def view_names(self) -> list[str]:
        crops = [f"crop {r},{c}" for r in range(self.rows) for c in range(self.cols)]
        return ([self.global_name] if self.global_view else []) + crops

    # Hosts that end token rows with a newline token (LLaVA-NeXT and its kin): how many there are.
    single_view_newline: ClassVar[bool] = True  # a single-view image ends with one newline

    def num_newlines(self, policy: NewlinePolicy = "unpadded") -> int:
        """Newline tokens that packing (:mod:`vtcompress.packing`) adds with ``policy``: one after
        each unpadded row of the crop grid ("unpadded", the stock packing), after each row of the
        full grid ("padded"), none ("none"); a single-view image gets ``single_view_newline``."""
        if not self.has_crops:
            return int(self.single_view_newline)
        if policy == "unpadded":
            return self.unpadded_shape[0]
        if policy == "padded":
            return self.rows * self.view_grid[0]
        return 0


@dataclass(frozen=True)
class UniformGridLayout(GridLayout):
    """A layout whose every view token exists (no letterbox): DocOwl, or a plain crop grid."""

    rows: int
    cols: int
    grid: tuple[int, int]
    global_view: bool = True
    patch_group: tuple[int, int] = (1, 1)

    @property
    def view_grid(self) -> tuple[int, int]:
        return self.grid


# Cached tensors are built outside inference mode: an inference tensor could not be used later
# in a computation that autograd records.
@functools.lru_cache(maxsize=256)
@torch.inference_mode(False)
def _crop_valid_mask(layout: GridLayout) -> Tensor:
    """CPU [rows*cols, h*w] bool mask, computed once per layout (callers copy it)."""
    h, w = layout.view_grid
    r = torch.arange(layout.rows * h)
    c = torch.arange(layout.cols * w)
    full = ((r >= layout.valid_rows[0]) & (r < layout.valid_rows[1]))[:, None] & (
        (c >= layout.valid_cols[0]) & (c < layout.valid_cols[1])
    )[None, :]
    # [rows*h, cols*w] -> [rows, h, cols, w] -> [rows, cols, h, w]
    return full.view(layout.rows, h, layout.cols, w).permute(0, 2, 1, 3).reshape(layout.num_crops, h * w)


@functools.lru_cache(maxsize=256)
def _view_counts(layout: GridLayout) -> tuple[int, ...]:
    crops = tuple(_crop_valid_mask(layout).sum(1).tolist()) if layout.num_crops else ()
    return ((layout.view_tokens,) if layout.global_view else ()) + crops


@functools.lru_cache(maxsize=256)
@torch.inference_mode(False)
def _view_positions(layout: Layout) -> tuple[Tensor, ...]:
    out = [torch.arange(layout.view_tokens)] if layout.global_view else []
    if layout.rows * layout.cols:
        valid = layout.crop_valid_mask()
        out += [valid[j].nonzero().squeeze(1) for j in range(valid.shape[0])]
    return tuple(out)


def view_positions(layout: Layout) -> list[Tensor]:
    """Per view, CPU long positions of the tokens that exist (raster order of the view's grid).

    Cached per layout: treat the tensors as read-only.
    """
    try:
        return list(_view_positions(layout))
    except TypeError:  # an unhashable third-party layout: compute afresh
        return list(_view_positions.__wrapped__(layout))
