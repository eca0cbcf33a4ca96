"""Batched PiToMe / ToMe, projector placement: every view of every image of one layout merged at once.

Views with the same number of valid tokens and the same budget follow the same schedule
(:func:`~vtcompress.methods.merging.merge_view`), so they are stacked into one batch of rows and
merged by the same steps, each step one call for all of them. Merged tokens are written back at
their representative positions (first source patch) into a [B, V, N, D] buffer with a keep mask,
so packing is :func:`~vtcompress.packing.pack_selected`'s; the per-view outputs (positions, sizes,
sources) are built from the merged rows by the per-image path's own bookkeeping when read.

The tower placement keeps the per-image path (the tower has merged already; what is left is
bookkeeping, and padding-only tokens make its counts data-dependent).
"""

from __future__ import annotations

import math

import torch

from vtcompress.batch import Plan, Plans, SelectedBatch, stacked
from vtcompress.layout import Layout, view_positions
from vtcompress.merge import exact_token_schedule, initial_owner, merge_owner, merge_sizes, merge_tokens
from vtcompress.methods.baselines import uniform_view_budgets
from vtcompress.methods.merging import TokenMergingConfig, _view_output
from vtcompress.tokens import ImageTokens, ViewOutput


def _plan(layout: Layout, config: TokenMergingConfig) -> Plan:
    """Views grouped by (valid tokens, budget): each group's views, their positions, its schedule."""
    positions = view_positions(layout)
    budgets = uniform_view_budgets(ImageTokens(torch.zeros(0), layout), config.ratio)
    groups: dict[tuple[int, int], list[int]] = {}
    for v, (pos, keep) in enumerate(zip(positions, budgets)):
        groups.setdefault((len(pos), keep), []).append(v)
    plan = Plan(groups=[], total=sum(budgets), empty_view=any(len(p) == 0 for p in positions) or 0 in budgets)
    for g, ((n, keep), views) in enumerate(groups.items()):
        steps = max(config.steps, math.ceil(math.log2(n / keep))) if 0 < keep < n else 0
        plan[f"views{g}"] = torch.tensor(views)
        plan[f"positions{g}"] = torch.stack([positions[v] for v in views])  # [G, n]
        plan["groups"].append((views, n, keep, exact_token_schedule(n, keep, steps) if steps else []))
    return plan


_plans = Plans(_plan)


def merging_batch(tokens: list[ImageTokens], config: TokenMergingConfig) -> SelectedBatch | None:
    """The batched path of ``pitome`` and ``tome`` (projector placement; registered by their modules)."""
    layout = tokens[0].layout
    if config.placement != "projector":
        return None
    first = tokens[0]
    if config.metric == "vision" and first.score_layer not in first.hidden:
        return None  # the per-image path says what is missing
    plan = _plans(layout, config)
    if plan["empty_view"]:
        return None
    b, (v, n_all, d) = len(tokens), first.features.shape
    batch = stacked(tokens)
    features = batch.features.view(b, v, n_all, d)
    dev = features.device
    if config.metric == "vision":
        metric = batch.hidden[first.score_layer].view(b, v, n_all + 1, -1)[:, :, 1:]  # drop [CLS]
    else:
        metric = features
    layer = max(first.score_layer - 1, 0)
    buffer = features.new_zeros(b * v * n_all, d)
    keep = torch.zeros(b * v * n_all, dtype=torch.bool, device=dev)
    merged_rows = []
    rows = torch.arange(b, device=dev)[:, None, None] * v
    for g, (views, n, k, schedule) in enumerate(plan["groups"]):
        vidx, pos = plan.on(f"views{g}", dev), plan.on(f"positions{g}", dev)
        x = features[:, vidx[:, None], pos].reshape(b * len(views), n, d)  # [B*G, n, D]
        m = metric[:, vidx[:, None], pos].reshape(b * len(views), n, -1)
        sizes, owner = None, initial_owner(x.shape[0], n, dev)
        for target in schedule:
            step = config.plan(m, m.shape[1] - target, layer, first.num_layers, class_token=False)
            x = merge_tokens(x, step, sizes, config.merge)
            m = merge_tokens(m, step, sizes, config.merge)
            sizes, owner = merge_sizes(step, sizes), merge_owner(step, owner)
        # each merged token stands at its first source patch (owners of patches in raster order)
        firsts = torch.full((x.shape[0], k), n, dtype=torch.long, device=dev).scatter_reduce_(
            1, owner, torch.arange(n, device=dev).expand_as(owner), "amin"
        )
        at = pos.repeat(b, 1).gather(1, firsts)  # [B*G, k] grid positions
        flat = ((rows + vidx[None, :, None]) * n_all).reshape(-1, 1) + at
        buffer.index_copy_(0, flat.reshape(-1), x.reshape(-1, d))
        keep.index_fill_(0, flat.reshape(-1), True)
        merged_rows.append((views, x, owner))
    views_of = _ViewsOf(merged_rows, plan, len(tokens), v, layout)
    return SelectedBatch(
        layout, buffer.view(b, v, n_all, d), keep.view(b, v, n_all), plan["total"], build_views=views_of
    )


class _ViewsOf:
    """Per-view outputs of image ``row`` by the per-image path's bookkeeping (when first read)."""

    def __init__(self, merged_rows, plan: Plan, size: int, num_views: int, layout: Layout) -> None:
        self.merged_rows, self.plan, self.size, self.num_views = merged_rows, plan, size, num_views
        self.positions = view_positions(layout)

    def __call__(self, row: int) -> list[ViewOutput]:
        out: list[ViewOutput | None] = [None] * self.num_views
        for views, x, owner in self.merged_rows:
            for j, view in enumerate(views):
                r = row * len(views) + j
                out[view] = _view_output(x[r], owner[r], self.positions[view])
        return out
