"""Batched compression: every image of a batch that shares one layout goes through a method at once.

A batched method (``register_batch``) returns a :class:`SelectedBatch`: which tokens of every view
of every image it keeps, as a bool mask on the device, and how many tokens each image keeps,
known on the host from the image size, ratio and config alone (exact budgets). Nothing is read
back from the device on the way: per-view outputs (:class:`~vtcompress.tokens.ViewOutput`) are
built only when someone asks for them (stats, a host that needs per-view counts), with one
device -> host copy for the whole group.

Everything that depends only on the layout and the options (valid masks, packing orders,
newline slots) is worked out on the CPU once and cached per layout (:mod:`vtcompress.packing`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from vtcompress.layout import Layout
from vtcompress.tokens import ImageTokens, LayerQK, ViewOutput, select_views


@dataclass(eq=False)
class SelectedBatch:
    """Tokens kept by a selection method in B images that share ``layout``.

    features: [B, V, N, D] the images' features (stacked, untouched).
    keep: bool [B, V, N] on the features' device, or bool [V, N] on the CPU when the kept set
        depends on the layout alone (the same for every image: ``uniform``, ``random``).
    total: tokens each image keeps (every image of the group keeps as many).
    info: optional ``(row, keep [V, N] on the CPU) -> per-view dicts``, the methods' per-view
        stats (``ViewOutput.info``), called when the views are first read.
    build_views: optional ``row -> per-view outputs``, for methods whose outputs carry more than
        the kept rows (merging: sizes, sources); by default they are read off ``keep``.
    Kept tokens of a view are emitted in raster order of the view's grid.
    """

    layout: Layout
    features: Tensor
    keep: Tensor
    total: int
    info: Callable[[int, Tensor], list[dict]] | None = None
    build_views: Callable[[int], list[ViewOutput]] | None = None
    _views: list[list[ViewOutput]] | None = field(default=None, repr=False)

    @property
    def size(self) -> int:
        return self.features.shape[0]

    @property
    def static(self) -> bool:
        """True when every image keeps the same positions, known on the host."""
        return self.keep.dim() == 2

    def views(self, row: int) -> list[ViewOutput]:
        """Per-view outputs of image ``row``; the first call reads the masks back once for all rows."""
        if self._views is None and self.build_views is not None:
            self._views = [self.build_views(b) for b in range(self.size)]
        if self._views is None:
            keep = self.keep.cpu()  # the one device -> host copy of the group (a no-op if static)
            if self.static:
                keep = keep.expand(self.size, *keep.shape)
            self._views = [
                select_views(self.features[b], [m.nonzero().squeeze(1) for m in keep[b]])
                for b in range(self.size)
            ]
            if self.info is not None:
                for b, views in enumerate(self._views):
                    for out, info in zip(views, self.info(b, keep[b])):
                        out.info = info
        return self._views[row]


class CompressedImage:
    """One image's compression result: per-view outputs, now (per-image path) or on demand."""

    def __init__(
        self,
        tokens: ImageTokens,
        outs: list[ViewOutput] | None = None,
        batch: SelectedBatch | None = None,
        row: int = 0,
    ) -> None:
        if (outs is None) == (batch is None):
            raise ValueError("give either per-view outputs or a batch")
        self.tokens, self._outs, self.batch, self.row = tokens, outs, batch, row

    @property
    def layout(self) -> Layout:
        return self.tokens.layout

    @property
    def views(self) -> list[ViewOutput]:
        """One ViewOutput per view (for a batched result: built on first access, one read per group)."""
        return self._outs if self._outs is not None else self.batch.views(self.row)

    @property
    def num_kept(self) -> int:
        """Tokens kept, newlines excluded (known on the host without a device read when batched)."""
        if self.batch is not None:
            return self.batch.total
        return sum(o.num_kept for o in self._outs)


# --- inputs ---------------------------------------------------------------------------------------
def joined(parts: list[Tensor]) -> Tensor:
    """``torch.cat(parts)`` along dim 0, as a view (no copy) when the parts are consecutive slices
    of one tensor, as hosts that run all views of a batch through the tower at once hand them over."""
    first = parts[0]
    try:
        storage = first.untyped_storage().data_ptr()
        offset, step = first.storage_offset(), first.stride(0)
        for p in parts:
            same = p.untyped_storage().data_ptr() == storage and p.stride() == first.stride()
            if not same or p.shape[1:] != first.shape[1:] or p.storage_offset() != offset:
                break
            offset += p.shape[0] * step
        else:
            rows = sum(p.shape[0] for p in parts)
            return first.as_strided((rows, *first.shape[1:]), first.stride(), first.storage_offset())
    except (RuntimeError, NotImplementedError):  # tensors without storage (wrappers): copy
        pass
    return torch.cat(parts)


def stacked(tokens: list[ImageTokens]) -> ImageTokens:
    """The images of one layout as one ImageTokens of B*V views (features [B*V, N, D], q/k and hidden
    states joined, see :func:`joined`): per-view functions (scores) then run once for the group."""
    first = tokens[0]
    qk = {
        i: LayerQK(
            joined([t.qk[i].q_cls for t in tokens]),
            joined([t.qk[i].keys for t in tokens]),
            first.qk[i].scale,
        )
        for i in first.qk
    }
    hidden = {i: joined([t.hidden[i] for t in tokens]) for i in first.hidden}
    features = joined([t.features for t in tokens])
    return ImageTokens(features, first.layout, qk, hidden, 0, first.score_layer, first.num_layers)


def cached_on(tensor: Tensor, device: torch.device, cache: dict) -> Tensor:
    """``tensor`` on ``device``, copied there once per cache (plans keep their device copies)."""
    key = (id(tensor), device)
    if key not in cache:
        with torch.inference_mode(False):  # cached tensors must stay usable outside inference mode
            cache[key] = (tensor, tensor.to(device))  # holds ``tensor``: its id stays its own
    return cache[key][1]


class Plan(dict):
    """Host-side facts of one (layout, config): CPU tensors and numbers, made once; ``on`` gives a
    tensor's copy on a device, made once per device (the plan holds it, so evicting the plan
    frees it)."""

    def on(self, name: str, device: torch.device) -> Tensor:
        copies = self.__dict__.setdefault("_copies", {})
        if (name, device) not in copies:
            with torch.inference_mode(False):  # cached tensors must stay usable outside inference mode
                copies[name, device] = self[name].to(device)
        return copies[name, device]


class Plans:
    """A bounded cache of host-side plans keyed by (layout, config, ...); configs are mutable
    dataclasses, so they are keyed by their type and values as they were when first seen."""

    def __init__(self, build, maxsize: int = 256) -> None:
        self.build, self.maxsize, self.cache = build, maxsize, {}

    def __call__(self, layout: Layout, config, *extra):
        key = (layout, type(config), repr(config.to_dict()), *extra)
        if key not in self.cache:
            if len(self.cache) >= self.maxsize:
                self.cache.pop(next(iter(self.cache)))
            with torch.inference_mode(False):  # cached tensors must stay usable outside inference mode
                self.cache[key] = self.build(layout, config, *extra)
        return self.cache[key]


# --- selection by rank ----------------------------------------------------------------------------
def rank_mask(scores: Tensor, budgets: Tensor) -> Tensor:
    """Bool mask of the ``budgets[..., None]`` highest ``scores`` along the last dim.

    scores: [..., N] (use -inf for tokens that must not be chosen); budgets: long [...] on the
    same device, or a CPU/host tensor broadcastable to it. Exactly ``budget`` tokens are chosen
    per row (ties: lower index first), with no read back to the host.
    """
    order = scores.argsort(dim=-1, descending=True, stable=True)
    return order.argsort(dim=-1) < budgets.unsqueeze(-1)
