"""Packing kept tokens into an image's token sequence, with the newline tokens of hosts that end
token rows with one (LLaVA-NeXT, LLaVA-OneVision, the ``llava`` package; vLLM's LLaVA-NeXT).

The sequence of one image: the global view's kept tokens (view 0, in the order given; raster
order from every built-in method), then the crops' kept tokens in raster order of the full crop
grid, with one newline after each row that the policy names (:data:`vtcompress.layout.NEWLINE_POLICIES`:
"unpadded" = each row of the unpadded grid, the stock packing; "padded" = each row of the full
grid; "none"). A single-view image is its tokens plus ``layout.single_view_newline`` newline.
With every token kept and "unpadded" this is the stock model's own sequence.

* :func:`pack_views`: one image from its per-view outputs;
* :func:`pack_selected`: every image of a :class:`~vtcompress.batch.SelectedBatch` at once, with a
  fixed number of operations and no read back to the host (the order is planned on the CPU once
  per layout: :func:`packing_plan`);
* :func:`pack_images`: a batch's results, each group compressed together packed at once.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch
from torch import Tensor

from vtcompress.batch import CompressedImage, SelectedBatch, cached_on
from vtcompress.layout import GridLayout, Layout, NewlinePolicy


def _newline_rows(layout: GridLayout, policy: NewlinePolicy) -> Tensor:
    """Rows of the full crop grid that a newline follows (long, CPU)."""
    if policy == "unpadded":
        return torch.arange(*layout.valid_rows)
    if policy == "padded":
        return torch.arange(layout.rows * layout.view_grid[0])
    return torch.zeros(0, dtype=torch.long)


def _grid_keys(layout: GridLayout, views: Tensor, index: Tensor, width: int) -> Tensor:
    """Raster keys ``row * (width + 1) + col`` in the full crop grid of token ``index`` of crop
    ``views`` (>= 1), both long CPU tensors of the same length (column ``width``: the newlines)."""
    h, w = layout.view_grid
    crop = views - 1
    row = (crop // layout.cols) * h + index // w
    col = (crop % layout.cols) * w + index % w
    return row * (width + 1) + col


def pack_views(
    layout: Layout,
    positions: list[Tensor],
    features: list[Tensor],
    newline: Tensor | None,
    policy: NewlinePolicy = "unpadded",
) -> Tensor:
    """One image's token sequence from its per-view kept tokens (see the module docstring).

    Args:
        layout: a global view first, then crops (a :class:`~vtcompress.layout.GridLayout`).
        positions: per view, long [k_v] token positions in that view's grid. View 0's tokens are
            emitted in the given order; crop tokens in full-grid raster order.
        features: per view, [k_v, D] features of those tokens.
        newline: [D] the model's newline embedding, or None (no newlines at all).
    Returns:
        [T, D], T = kept tokens + newlines.
    """
    thumb = features[0]
    if not layout.has_crops:
        if newline is None or not layout.num_newlines(policy):
            return thumb
        return torch.cat([thumb, newline[None].to(thumb)], dim=0)

    # The order is worked out on the CPU from the (small) positions; the features then move
    # once: one cat of every kept row (newline last) and one gather in packing order.
    dtype, device = thumb.dtype, thumb.device
    width = layout.cols * layout.view_grid[1]
    pos = _to_cpu(positions)
    counts = [len(p) for p in pos]
    crop_index = torch.cat(pos[1:]) if len(pos) > 1 else torch.empty(0, dtype=torch.long)
    crop_views = torch.repeat_interleave(
        torch.arange(1, len(pos)), torch.tensor(counts[1:], dtype=torch.long)
    )
    crop_keys = _grid_keys(layout, crop_views, crop_index.long(), width)
    rows_out = torch.arange(counts[0], len(crop_keys) + counts[0])  # rows in the cat of features
    table = list(features)
    if newline is not None and policy != "none":
        rows = _newline_rows(layout, policy)
        # A row's newline sorts after every token of that row; every newline reads the last row.
        crop_keys = torch.cat([crop_keys, rows * (width + 1) + width])
        rows_out = torch.cat([rows_out, torch.full((len(rows),), sum(counts), dtype=torch.long)])
        table.append(newline.to(device, dtype)[None])
    order = torch.argsort(crop_keys, stable=True)
    index = torch.cat([torch.arange(counts[0]), rows_out[order]])
    return torch.cat(table, dim=0).index_select(0, index.to(device))


def _to_cpu(positions: list[Tensor]) -> list[Tensor]:
    """The positions on the CPU, with at most one device -> host copy for all views."""
    if all(p.device.type == "cpu" for p in positions):
        return list(positions)
    flat = torch.cat([p.reshape(-1).long() for p in positions]).cpu()
    return list(flat.split([p.numel() for p in positions]))


def pack_images(
    images: list[CompressedImage], newline: Tensor | None, policy: NewlinePolicy = "unpadded"
) -> list[Tensor]:
    """Every image's packed sequence ([T_i, D] each, as :func:`pack_views` packs it).

    Images compressed together (one :class:`~vtcompress.batch.SelectedBatch`) are packed at once,
    with no read back to the host; the others one by one.
    """
    out: list[Tensor | None] = [None] * len(images)
    groups: dict[int, list[int]] = {}
    for i, im in enumerate(images):
        if im.batch is not None:
            groups.setdefault(id(im.batch), []).append(i)
        else:
            views = im.views
            out[i] = pack_views(
                im.layout, [o.positions for o in views], [o.features for o in views], newline, policy
            )
    for members in groups.values():
        packed = pack_selected(images[members[0]].batch, newline, policy).unbind(0)
        for i in members:
            out[i] = packed[images[i].row]
    return out


# --- batched packing -----------------------------------------------------------------------------
@dataclass(frozen=True)
class PackingPlan:
    """Order of a packed image sequence over its V*N token slots and newline slots.

    perm: long [V*N + L], every slot sorted in packing order (thumbnail in raster order, then
    the crops' full-grid raster order with each row's newline after it); slots >= V*N are
    newlines. newlines: L, the number of newline slots.
    """

    perm: Tensor
    newlines: int
    device_copies: dict = field(default_factory=dict, compare=False, hash=False)


@functools.lru_cache(maxsize=256)
@torch.inference_mode(False)
def packing_plan(layout: GridLayout, policy: NewlinePolicy, newline: bool) -> PackingPlan:
    """The packing order of ``layout`` (the order :func:`pack_views` emits), cached per layout."""
    h, w = layout.view_grid
    n, views = h * w, layout.num_views
    pos = torch.arange(n)
    if not layout.has_crops:
        keys = [pos]
        rows = torch.zeros(int(newline) * layout.num_newlines(policy), dtype=torch.long)
        nl_keys = torch.full((len(rows),), n)
    else:
        width = layout.cols * w
        keys = [pos] if layout.global_view else []
        for crop in range(layout.num_crops):
            row = (crop // layout.cols) * h + pos // w
            col = (crop % layout.cols) * w + pos % w
            keys.append(n + row * (width + 1) + col)
        rows = _newline_rows(layout, policy if newline else "none")
        nl_keys = n + rows * (width + 1) + width
    order = torch.argsort(torch.cat([*keys, nl_keys]), stable=True)
    assert len(order) == views * n + len(rows)
    return PackingPlan(order, len(rows))


def pack_selected(batch: SelectedBatch, newline: Tensor | None, policy: NewlinePolicy = "unpadded") -> Tensor:
    """Packed sequences of a selected batch: [B, T, D], T = kept tokens + newlines.

    The same sequence ``pack_views`` builds from the per-view outputs (thumbnail tokens in raster
    order, then crop tokens in full-grid raster order, newlines per ``policy``), with a fixed
    number of operations for the whole group and no read back to the host.
    """
    feats = batch.features
    b, v, n, d = feats.shape
    plan = packing_plan(batch.layout, policy, newline is not None)
    slots = v * n
    total = batch.total + plan.newlines
    if batch.static:  # the kept slots are known on the host: one gather
        key = ("static", id(batch.keep), feats.device)
        if key not in plan.device_copies:
            with torch.inference_mode(False):  # cached tensors must stay usable outside inference mode
                slots_and_newlines = torch.cat(
                    [batch.keep.reshape(-1), torch.ones(plan.newlines, dtype=torch.bool)]
                )
                kept = slots_and_newlines[plan.perm]
                entry = plan.perm[kept]
                plan.device_copies[key] = (
                    batch.keep,
                    entry.clamp_max(slots - 1).to(feats.device),
                    (entry >= slots).to(feats.device),
                )
        _, rows, is_newline = plan.device_copies[key]
        out = feats.reshape(b, slots, d).index_select(1, rows)
        is_newline = is_newline[:, None]
    else:
        perm = cached_on(plan.perm, feats.device, plan.device_copies)
        kept = torch.nn.functional.pad(batch.keep.reshape(b, slots), (0, plan.newlines), value=True)[:, perm]
        # Kept slots first (in packing order), dropped ones after: the first ``total`` are the sequence.
        first = (~kept).argsort(dim=1, stable=True)[:, :total]
        entry = perm[first]  # [B, T]
        is_newline = (entry >= slots)[..., None]
        out = feats.reshape(b, slots, d).gather(1, entry.clamp_max(slots - 1)[..., None].expand(b, total, d))
    if newline is None or plan.newlines == 0:
        return out
    return torch.where(is_newline, newline.to(feats.dtype), out)
