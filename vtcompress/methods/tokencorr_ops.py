"""Pure tensor steps of token-level correlation-guided compression (``tokencorr``).

Reconstructed from the paper (arXiv 2407.14439); official code unreleased. Each function works
on the views of one image at once or on a single view, never on a model. The method module
:mod:`vtcompress.methods.tokencorr` chains them; see it for the algorithm and its parameters.

Shapes: V views, N patch tokens of a view (no [CLS]), M selectable units of a view (N patches,
or N / g groups of g patches for DocOwl's H-Reducer), H heads, dh head dim.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from vtcompress.budget import split_budget
from vtcompress.config import check_choice
from vtcompress.kernels import cls_attention_logits, redundancy_count
from vtcompress.tokens import LayerQK

KEY_HEADS: tuple[str, ...] = ("concat", "mean")
GROUP_POOLS: tuple[str, ...] = ("sum", "mean", "max")
SAMPLINGS: tuple[str, ...] = ("sample", "topk")
# How the global (IQR outlier) and local (sampled) branches combine; see select_view.
COMBINES: tuple[str, ...] = ("union", "inside", "disjoint")
# Grouped mode: IQR outliers among patch scores (a group holding one is global) or group scores.
GROUP_OUTLIERS: tuple[str, ...] = ("patch", "group")


def patch_keys(qk: LayerQK, heads: str = "concat") -> Tensor:
    """Patch-token keys of a layer as one vector per token.

    Args:
        qk: the layer's captured inputs, ``keys`` [V, 1+N, H, dh] with [CLS] first.
        heads: "concat" (per-head keys side by side, [V, N, H*dh]: the layer's whole key
            projection) or "mean" (the heads' keys averaged, [V, N, dh]).
    """
    keys = qk.keys[:, 1:]
    if heads == "concat":
        return keys.flatten(2)
    if heads == "mean":
        return keys.float().mean(dim=2)
    raise ValueError(f"heads must be one of {KEY_HEADS}, got {heads!r}")


def information_density(
    keys: Tensor, threshold: float, min_similar: int, valid: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Per view, the share of valid tokens that are not redundant.

    Token i is redundant when at least ``min_similar`` other valid tokens j have
    ``cos(k_i, k_j) > threshold``; density = 1 - #redundant / #valid (0 for a view without
    valid tokens).

    Args:
        keys: [V, N, C] token keys. valid: optional bool [V, N] (padding is neither counted nor
            counts).
    Returns:
        density float32 [V], redundant bool [V, N] (False where invalid).
    """
    if valid is None:
        valid = torch.ones(keys.shape[:2], dtype=torch.bool, device=keys.device)
    counts = redundancy_count(keys, threshold, valid)
    redundant = (counts >= min_similar) & valid
    n_valid = valid.sum(1)
    density = 1.0 - redundant.sum(1).float() / n_valid.clamp_min(1).float()
    return density.masked_fill(n_valid == 0, 0.0), redundant


def cls_patch_probs(qk: LayerQK) -> Tensor:
    """[V, N] head-mean [CLS] attention probabilities over the patch tokens.

    The softmax runs over every key the tower attended to ([CLS] and padding included), as in
    the forward pass; the [CLS] column is then dropped, so a row sums to less than one.
    """
    return cls_attention_logits(qk.q_cls, qk.keys, qk.scale).softmax(dim=-1)[:, :, 1:].mean(dim=1)


def pool_groups(values: Tensor, grid: tuple[int, int], group: tuple[int, int], how: str = "sum") -> Tensor:
    """Pool per-patch values over non-overlapping ``group`` windows of a ``grid`` of patches.

    Args:
        values: [V, R*C] per patch, raster order of an R x C grid (R, C = ``grid``).
        group: (gh, gw) window, e.g. (1, 4) for DocOwl's H-Reducer; must divide the grid.
        how: "sum" (a group's attention mass), "mean" or "max"; for bool values "max" is "any".
    Returns:
        [V, (R/gh)*(C/gw)] per group, raster order of the group grid.
    """
    (rows, cols), (gh, gw) = grid, group
    if rows % gh or cols % gw:
        raise ValueError(f"group {group} does not tile the {rows}x{cols} patch grid")
    if values.shape[-1] != rows * cols:
        raise ValueError(
            f"expected {rows * cols} values per view for a {rows}x{cols} grid, got {values.shape[-1]}"
        )
    x = values.reshape(-1, rows // gh, gh, cols // gw, gw).permute(0, 1, 3, 2, 4).flatten(3)
    if how == "sum":
        out = x.sum(-1)
    elif how == "mean":
        out = x.float().mean(-1)
    elif how == "max":
        out = x.amax(-1)
    else:
        raise ValueError(f"how must be one of {GROUP_POOLS}, got {how!r}")
    return out.flatten(1)


def iqr_outliers(scores: Tensor, k: float = 1.5, valid: Tensor | None = None) -> Tensor:
    """Upper IQR outliers of one view: ``s_i > Q3 + k (Q3 - Q1)`` among valid tokens.

    Quartiles are torch.quantile's (linear interpolation) over the valid scores only.

    Args:
        scores: [M]. valid: optional bool [M].
    Returns:
        bool [M], False where invalid.
    """
    if valid is None:
        valid = torch.ones_like(scores, dtype=torch.bool)
    if not bool(valid.any()):
        return torch.zeros_like(valid)
    s = scores[valid].double()
    q1, q3 = torch.quantile(s, torch.tensor([0.25, 0.75], dtype=s.dtype, device=s.device)).unbind()
    return (scores.double() > q3 + k * (q3 - q1)) & valid


def group_outliers(
    patch_scores: Tensor,
    valid: Tensor,
    grid: tuple[int, int],
    group: tuple[int, int],
    iqr_k: float = 1.5,
    detect: str = "patch",
    pool: str = "sum",
) -> tuple[Tensor, Tensor]:
    """Global groups of one view (grouped mode, e.g. DocOwl's 1x4 H-Reducer groups).

    Args:
        patch_scores: [N] deep-layer [CLS] attention of each patch, raster order of ``grid``.
        valid: bool [N]; a group is valid when all its patches are.
        detect: "patch" (the architecture figure selects patches): IQR outliers among the valid
            PATCH scores; a group is global when it holds an outlier patch, and is ranked by its
            highest patch score. "group": IQR outliers among the valid groups' pooled scores
            (``pool`` over each group), ranked by them.
    Returns:
        outliers bool [M] and ranking scores [M] per group (raster order of the group grid).
    """
    check_choice("detect", detect, GROUP_OUTLIERS)
    group_valid = pool_groups(valid[None].float(), grid, group, "mean")[0] == 1.0
    if detect == "patch":
        hit = iqr_outliers(patch_scores, iqr_k, valid)
        outliers = pool_groups(hit[None], grid, group, "max")[0] & group_valid
        return outliers, pool_groups(patch_scores[None], grid, group, "max")[0]
    scores = pool_groups(patch_scores[None], grid, group, pool)[0]
    return iqr_outliers(scores, iqr_k, group_valid), scores


def sample_without_replacement(probs: Tensor, k: int, generator: torch.Generator | None = None) -> Tensor:
    """Draw ``k`` distinct indices, each next one with probability proportional to ``probs``.

    Exponential race: index i gets the key E_i / p_i with E_i ~ Exp(1); the k smallest keys are
    distributed exactly as k successive draws without replacement. Zero-probability indices
    come last (lowest index first), so any k <= M is possible. The noise comes from
    ``generator`` on the CPU, so a seed gives the same draw on every device.

    Args:
        probs: [M] non-negative weights (need not sum to one).
    Returns:
        long [k] indices in draw order.
    """
    m = probs.shape[0]
    if not 0 <= k <= m:
        raise ValueError(f"cannot draw {k} distinct indices out of {m}")
    if bool((probs < 0).any()) or not bool(torch.isfinite(probs).all()):
        raise ValueError("probs must be finite and non-negative")
    u = torch.rand(m, generator=generator, dtype=torch.float64).to(probs.device)
    keys = -torch.log1p(-u) / probs.double()  # Exp(1) / p; p = 0 gives +inf
    return torch.sort(keys, stable=True).indices[:k]


def top_indices(scores: Tensor, k: int) -> Tensor:
    """The ``k`` largest of ``scores`` [M] (ties: lower index first), long [k] by descending score."""
    return torch.sort(scores.double(), descending=True, stable=True).indices[:k]


def draw_local(
    probs: Tensor, candidates: Tensor, k: int, sampling: str, generator: torch.Generator | None
) -> Tensor:
    """``k`` of ``candidates`` (long [C] unit indices) by local attention ``probs`` [M], ascending.

    "sample": draws without replacement from ``probs`` renormalised over the candidates
    (uniform when they hold no mass); "topk": the ``k`` most attended.
    """
    k = max(0, min(int(k), candidates.numel()))
    p = probs[candidates].double()
    if sampling == "sample":
        p = p / p.sum() if float(p.sum()) > 0 else torch.ones_like(p)
        pick = sample_without_replacement(p, k, generator)
    elif sampling == "topk":
        pick = top_indices(p, k)
    else:
        raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
    return candidates[pick].sort().values


def select_view(
    global_scores: Tensor,
    local_probs: Tensor,
    budget: int,
    valid: Tensor | None = None,
    iqr_k: float = 1.5,
    combine: str = "inside",
    sampling: str = "sample",
    generator: torch.Generator | None = None,
    outliers: Tensor | None = None,
    exact: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """Pick one view's tokens: IQR-outlier global tokens G and local tokens drawn from [CLS] attention.

    How the two branches combine (``combine``, n_c = ``budget``):

    * "union" (the architecture figure: independent branches, then aggregation): n_c local
      tokens are drawn over ALL valid units, G is found independently, the view keeps
      ``G | local``: between n_c and n_c + |G| units. With ``exact`` the union is cut back to
      n_c: local-only units go first, lowest local probability first; outliers go last, lowest
      ``global_scores`` first. So the view keeps G (its n_c highest if |G| > n_c) plus the most
      attended of the drawn local units.
    * "inside": G counts inside n_c (if |G| > n_c, the n_c highest ``global_scores`` of G stay);
      n_c - |G| local tokens are drawn from the rest. Always n_c units.
    * "disjoint": n_c local tokens drawn from the units outside G, kept on top of G:
      |G| + n_c units (``exact`` is refused: the count depends on |G|).

    Args:
        global_scores: [M] deep-layer [CLS] attention of each unit; finds G (unless ``outliers``
            is given) and ranks it when G must be cut.
        local_probs: [M] low-layer [CLS] attention of each unit: the local distribution.
        budget: n_c, the number of local draws (capped by the valid units).
        valid: optional bool [M]; invalid units are never kept.
        outliers: optional bool [M], G precomputed (grouped mode's per-patch outliers);
            default: the upper IQR outliers of ``global_scores`` with fence ``iqr_k``.
        exact: the view must keep exactly ``budget`` units (exact allocation).
        sampling: "sample" (seeded draws without replacement, the paper) or "topk" (the most
            attended, deterministic).
    Returns:
        kept long [k] in raster order, global long [g] (the kept units of G), local long
        [k - g] (the kept units outside G); both ascending, disjoint, together ``kept``.
    """
    check_choice("combine", combine, COMBINES)
    if valid is None:
        valid = torch.ones_like(global_scores, dtype=torch.bool)
    budget = max(0, min(int(budget), int(valid.sum())))
    if outliers is None:
        outliers = iqr_outliers(global_scores, iqr_k, valid)
    outliers = outliers & valid
    glob = outliers.nonzero().squeeze(1)
    if combine == "disjoint":
        if exact:
            raise ValueError(
                "combine='disjoint' keeps the outliers on top of n_c, so it cannot keep an exact count"
            )
        local = draw_local(local_probs, (valid & ~outliers).nonzero().squeeze(1), budget, sampling, generator)
    elif combine == "inside":
        if glob.numel() > budget:
            glob = glob[top_indices(global_scores[glob], budget)].sort().values
        rest = (valid & ~outliers).nonzero().squeeze(1)
        local = draw_local(local_probs, rest, budget - glob.numel(), sampling, generator)
    else:  # union
        drawn = draw_local(local_probs, valid.nonzero().squeeze(1), budget, sampling, generator)
        local = drawn[~outliers[drawn]]
        if exact and glob.numel() + local.numel() > budget:
            if glob.numel() > budget:
                glob = glob[top_indices(global_scores[glob], budget)].sort().values
            room = budget - glob.numel()
            local = local[top_indices(local_probs[local], room)].sort().values
    return torch.cat([glob, local]).sort().values, glob, local


def adaptive_budgets(
    density: Tensor, counts: Tensor | list[int], scale: float, min_keep: int = 1
) -> list[int]:
    """Paper allocation: view c keeps ``ceil(rho_c * N_c * scale)`` units, within [min_keep, N_c].

    Args:
        density: [V] rho_c. counts: [V] N_c, the view's selectable units.
    """
    out = []
    for rho, n in zip(density.tolist(), torch.as_tensor(counts).tolist()):
        want = math.ceil(rho * n * scale - 1e-9)  # epsilon: float error must not add a token
        out.append(min(int(n), max(min(min_keep, int(n)), want)))
    return out


def exact_budgets(density: Tensor, counts: Tensor | list[int], total: int, min_keep: int = 1) -> list[int]:
    """Exact allocation: ``total`` units split across views in proportion to rho_c * N_c.

    rho_c * N_c is the view's count of non-redundant units (proportional to rho_c when views
    are the same size). Every view with units first gets ``min_keep``, so the sum is
    ``max(total, that floor)`` capped by sum N_c; largest remainders via
    :func:`vtcompress.budget.split_budget`.
    """
    n = torch.as_tensor(counts, dtype=torch.long).cpu()
    floor = torch.minimum(n, torch.full_like(n, min_keep))
    rest = max(0, int(total) - int(floor.sum()))
    weights = density.double().cpu() * n.double()
    extra = split_budget(rest, weights, n - floor)
    return [int(f) + e for f, e in zip(floor.tolist(), extra)]
