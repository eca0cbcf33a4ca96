"""Downsample: the plain lower-resolution baseline, as area-average pooling of each view's token grid.

Benchmark studies (VTC-Bench, arXiv 2510.07143) found that simply giving the model a smaller image
beats many published pruning methods at equal token counts. Resizing the image itself cannot
give an arbitrary count on hosts whose processor expands a fixed placeholder run per view (the
prompt would change, and LLaVA-NeXT's crop grid moves in coarse steps), so this method does what
a lower resolution gives the language model: fewer tokens, each the average of the area it covers.

For every view, its ``k`` tokens (the image's ``floor(r N)`` split across views in proportion to
their sizes, as every baseline) are ``k`` cells of near-equal area tiling the view's valid
rectangle: ``R`` bands of rows (``R = round(sqrt(k h / w))``, kept so that each band gets at
most ``w`` cells), each band split into one cell plus its share of the other ``k - R`` in
proportion to its height (largest remainders), cells spanning columns; band and cell edges at
``floor(i * length / parts)``. A kept token is the mean of its cell's projected tokens and
stands at the cell's top-left patch, so tokens stay in raster order and the host's newlines stay
per row.

What it is equal to: where ``k`` tiles the view evenly, ``avg_pool2d`` of the projected token grid
(ratio 1/4 on a 24x24 view: 2x2 pooling, the 144-token grid LLaVA-OneVision gives video frames).
What it is not: re-encoding a smaller image. The vision tower still sees the full resolution
(its cost is unchanged, only the language model's prefill shrinks), and each token averages
projected features, not the features of a lower-resolution image. On Qwen2.5-VL a real lower
resolution is the processor's ``max_pixels``; that changes the prompt and is not this method.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from vtcompress.batch import Plan, Plans, SelectedBatch, stacked
from vtcompress.budget import split_budget
from vtcompress.config import CompressionConfig
from vtcompress.layout import Layout, view_positions
from vtcompress.methods.baselines import uniform_view_budgets
from vtcompress.registry import register_batch, register_method
from vtcompress.tokens import ImageTokens, ViewOutput


@dataclass
class DownsampleConfig(CompressionConfig):
    """Area-average pooling of each view's token grid to the exact budget."""


def grid_cells(h: int, w: int, k: int) -> list[list[tuple[int, int]]]:
    """``k`` cells of near-equal area tiling an ``h x w`` grid, in raster order of their top-left
    corners; each cell a list of its (row, col) in raster order (see the module docstring)."""
    if k <= 0 or h * w == 0:
        return []
    if k >= h * w:
        return [[(r, c)] for r in range(h) for c in range(w)]
    bands = min(max(round(math.sqrt(k * h / w)), math.ceil(k / w)), h, k)
    heights = [(b + 1) * h // bands - b * h // bands for b in range(bands)]
    # one cell per band, the rest in proportion to the bands' heights: cells of near-equal area
    per_band = [1 + extra for extra in split_budget(k - bands, heights, [w - 1] * bands)]
    cells = []
    for band, parts in enumerate(per_band):
        rows = range(band * h // bands, (band + 1) * h // bands)
        for part in range(parts):
            cols = range(part * w // parts, (part + 1) * w // parts)
            cells.append([(r, c) for r in rows for c in cols])
    return cells


def _plan(layout: Layout, config: DownsampleConfig) -> Plan:
    """Every kept token's cell as slots of the flattened [V*N] grid (padded with V*N), its size,
    its slot, the static keep mask [V, N], and per view its cells (for the per-view outputs)."""
    h, w = layout.view_grid
    n = h * w
    budgets = uniform_view_budgets(ImageTokens(torch.zeros(0), layout), config.ratio)
    members, views = [], []
    for view, (pos, k) in enumerate(zip(view_positions(layout), budgets)):
        if len(pos) == 0 or k == 0:
            views.append([])
            continue
        r0, c0 = int(pos[0]) // w, int(pos[0]) % w
        r1, c1 = int(pos[-1]) // w + 1, int(pos[-1]) % w + 1
        if len(pos) != (r1 - r0) * (c1 - c0):
            raise ValueError(f"downsample needs each view's valid tokens to form a rectangle (view {view})")
        cells = [[(r0 + r) * w + c0 + c for r, c in cell] for cell in grid_cells(r1 - r0, c1 - c0, k)]
        views.append(cells)
        members += [[view * n + p for p in cell] for cell in cells]
    width = max((len(m) for m in members), default=1)
    pad = layout.num_views * n
    table = torch.tensor([m + [pad] * (width - len(m)) for m in members], dtype=torch.long).view(-1, width)
    slots = table[:, 0]
    keep = torch.zeros(layout.num_views * n, dtype=torch.bool)
    keep[slots] = True
    return Plan(
        members=table,
        sizes=torch.tensor([len(m) for m in members], dtype=torch.float32),
        slots=slots,
        keep=keep.view(layout.num_views, n),
        views=views,
        total=len(members),
    )


_plans = Plans(_plan)


def pool(features: Tensor, plan: Plan) -> Tensor:
    """[B, K, D] cell means (float32 sums, in the features' dtype) of B images' [B, V, N, D] features."""
    b, v, n, d = features.shape
    dev = features.device
    flat = torch.cat([features.reshape(b, v * n, d), features.new_zeros(b, 1, d)], dim=1)
    cells = flat[:, plan.on("members", dev)]  # [B, K, S, D], padding rows are zero
    return (cells.float().sum(dim=2) / plan.on("sizes", dev)[:, None]).to(features.dtype)


def _view_outputs(pooled: Tensor, plan: Plan) -> list[ViewOutput]:
    """Per-view outputs of one image's [K, D] pooled tokens."""
    out, start = [], 0
    for cells in plan["views"]:
        firsts = torch.tensor([c[0] for c in cells], dtype=torch.long)
        out.append(
            ViewOutput(
                positions=firsts,
                features=pooled[start : start + len(cells)],
                sizes=torch.tensor([len(c) for c in cells], dtype=torch.long),
                sources=[torch.tensor(c, dtype=torch.long) for c in cells],
            )
        )
        start += len(cells)
    return out


@register_method("downsample", DownsampleConfig, "area-average pooling of each view's token grid (baseline)")
def downsample(tokens: ImageTokens, config: DownsampleConfig) -> list[ViewOutput]:
    """One image; one ViewOutput per view (pooled tokens at their cells' top-left positions)."""
    plan = _plans(tokens.layout, config)
    return _view_outputs(pool(tokens.features[None], plan)[0], plan)


@register_batch("downsample")
def downsample_batch(tokens: list[ImageTokens], config: DownsampleConfig) -> SelectedBatch:
    """:func:`downsample` for images of one layout: one gather and one sum for every image; the kept
    slots are the layout's (a static mask), the pooled tokens written there."""
    layout, b = tokens[0].layout, len(tokens)
    plan = _plans(layout, config)
    features = stacked(tokens).features.view(b, *tokens[0].features.shape)
    v, n, d = features.shape[1:]
    pooled = pool(features, plan)
    buffer = features.new_zeros(b, v * n, d)
    buffer[:, plan.on("slots", buffer.device)] = pooled
    return SelectedBatch(
        layout,
        buffer.view(b, v, n, d),
        plan["keep"],
        plan["total"],
        build_views=lambda row: _view_outputs(pooled[row], plan),
    )
