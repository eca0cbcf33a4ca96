"""Token-level correlation-guided compression (``tokencorr``): adaptive per-view token sampling.

Paper: "Token-level Correlation-guided Compression for Efficient Multimodal Document
Understanding" (arXiv 2407.14439), evaluated on mPLUG-DocOwl1.5. Reconstructed from the paper;
official code unreleased (the authors' repository holds no code, only the architecture figure).
Every quantity the sources leave open is a named parameter of :class:`TokenCorrConfig`; the
defaults are choices, not values read off the paper, and have not been tuned. The paper's
headline numbers include LoRA fine-tuning of the language model; this module is the training-free
(plug-and-play) use.

Per view (a crop; the thumbnail / global view too when ``compress_global``), with N valid patch
tokens plus [CLS] in a ViT of L layers:

A. Information density. Patch keys of layer ``low_layer`` (heads concatenated or averaged,
   ``key_heads``); token i is redundant when at least ``min_similar`` other tokens j have
   ``cos(k_i, k_j) > tau``; ``rho = 1 - #redundant / N``. Budget ``n_c = ceil(rho * N * scale)``
   ("adaptive", the paper's point: a blank crop keeps almost nothing, a dense one a lot), or a
   total split across views in proportion to ``rho * N`` ("exact").
B. Global tokens G: the upper IQR outliers (``a_i > Q3 + iqr_k (Q3 - Q1)``) of the head-mean
   [CLS] attention probabilities of layer ``deep_layer``.
C. Local tokens: draws without replacement from the [CLS] attention probabilities of
   ``low_layer`` (seeded; ``sampling="topk"`` takes the most attended instead).
D. The branches combine as ``combine`` says (see :func:`~vtcompress.methods.tokencorr_ops.select_view`):
   "union" (the architecture figure, :meth:`TokenCorrConfig.paper`: "Global-info Mining" and
   "Local-info Mining" as independent branches joined by an aggregation, the number of local
   samples set by density alone): n_c draws over ALL patches, kept together with all of G;
   "inside" (the default): G counts inside n_c, n_c - |G| draws from the rest; "disjoint": n_c
   draws outside G, on top of G. The kept tokens go back in raster order and the features the
   model uses (``ImageTokens.features``, the last layer's after the projector) are gathered there.

How ``ratio`` maps to the budget:
* ``allocation="exact"`` (default): the image keeps ``floor(ratio * N)`` of its N visual tokens,
  the package-wide rule, so tokencorr compares token for token with every other method. Views
  left whole (the thumbnail, unless ``compress_global``) take their tokens out of that total
  first; the compressed views share the rest in proportion to ``rho * N`` (largest remainders,
  at least one each). When the total cannot even hold the whole views, every view is
  compressed. Each view keeps exactly its n_c: "union" is cut back to n_c (local-only tokens
  first, lowest local probability first; outliers last, lowest deep score first), "disjoint" is
  refused. The count is a function of image size and ratio only, for static shapes.
* ``allocation="adaptive"`` (the paper's allocation): ``scale = ratio`` unless ``scale`` is set.
  ``ratio`` is then the share kept by a fully dense view (rho = 1); a view of density rho keeps
  about ``rho * ratio`` of its tokens ("inside"; "union" and "disjoint" add outliers on top), so
  sparse pages cost less. Setting ``scale`` overrides ``ratio`` (``scale=1.0`` is the paper's
  ``n_c = ceil(rho N)``; :meth:`TokenCorrConfig.paper`). An uncompressed thumbnail (the
  default) keeps all its tokens on top.
``ratio=1.0`` keeps everything (exactly the stock output) unless ``scale`` is set.

Models. LLaVA-NeXT: each crop's 24x24 grid is one view (units = single patches, padding from
unpadding never kept nor counted); packing puts kept tokens back in their rows and keeps one
newline per row. mPLUG-DocOwl1.5: :func:`select_groups` scores the 32x32 patch grid and selects
1x4 groups before the H-Reducer, whose outputs each depend on one group only (so selecting groups
before it equals selecting its outputs after it); its ``vit_eos`` is always kept
(:func:`hreducer_keep_index`).

Deliberate deviations and choices (the sources do not settle these):
* Branch combination: the figure is read as a union; the text that would settle it is not
  available, so "inside" and "disjoint" stay options, and the default is "inside" because the
  default allocation is exact. The exact-mode cut-back of "union" is this module's rule.
* Allocation: the default is the package-wide exact budget, not the paper's ``ceil(rho N)``;
  ``scale`` (the paper has none, i.e. 1) lets adaptive mode aim at a ratio.
* Every view with tokens gets n_c >= 1 local draw (the paper's ``ceil(rho N)`` is 0 at rho = 0).
* DocOwl grouped mode: selection in whole 1x4 groups (the H-Reducer needs them; the figure
  selects patches). G: IQR outliers among the 1024 patch scores, a group is global when it holds
  one and is ranked by its highest patch score (``group_outliers="patch"``, the faithful reading)
  or IQR outliers of the pooled group scores (``"group"``). Density is per patch, but n_c and the
  draws count groups, drawn from the group-pooled low-layer attention (``group_pool``).
* [CLS] attention is the head mean of the softmax probabilities (an assumption); the softmax runs
  over every key the tower attended to, while similarity, IQR and density use valid (unpadded)
  tokens only. Zero local attention mass falls back to uniform draws.
* The thumbnail / global view is left whole unless ``compress_global`` (the paper leaves it).
* Draws use a CPU generator seeded per view (``seed * 65536 + v``), so an image keeps the same
  tokens alone or in any batch, on any device.
* Called directly on a single-view image, the method compresses its only view (the LLaVA-NeXT
  adapter passes such images through untouched); in exact mode the one-token-per-view floor wins
  over a total smaller than the number of views.
* Stats: ``sampled`` lists the kept tokens outside G (a draw that hit an outlier counts as
  global), so ``global`` and ``sampled`` are disjoint and together the kept tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from vtcompress.budget import keep_count
from vtcompress.config import CompressionConfig, check_choice
from vtcompress.methods.tokencorr_ops import (
    COMBINES,
    GROUP_OUTLIERS,
    GROUP_POOLS,
    KEY_HEADS,
    SAMPLINGS,
    adaptive_budgets,
    cls_patch_probs,
    exact_budgets,
    group_outliers,
    information_density,
    iqr_outliers,
    patch_keys,
    pool_groups,
    select_view,
)
from vtcompress.registry import register_method
from vtcompress.tokens import ImageTokens, LayerQK, ViewOutput


@dataclass
class TokenCorrConfig(CompressionConfig):
    """Options of ``tokencorr`` (spec names in brackets). Defaults are untuned choices.

    allocation: "exact" (default: ``floor(ratio * N)`` per image, split across views by density)
        or "adaptive" (the paper's: density alone sets each view's count).
    scale: [scale] multiplier of ``rho * N`` in adaptive mode; None means ``ratio``.
    low_layer: [l_low] vision layer whose keys give the density and whose [CLS] attention is
        the sampling distribution. A shallow layer: its keys still describe a patch's own
        appearance. Negative values count from the end (``num_layers + low_layer``); None
        (default) means ``num_layers // 12`` (layer 2 of CLIP ViT-L's 24, layer 0 of a tiny tower).
    deep_layer: [l_deep] vision layer whose [CLS] attention finds the global tokens; default -2,
        the penultimate layer.
    key_heads: "concat" (all heads' keys as one vector) or "mean" (keys averaged over heads).
    tau: [tau] cosine similarity above which two tokens count as alike.
    min_similar: [m] a token with at least this many alike tokens is redundant.
    iqr_k: [k] IQR fence multiplier for global tokens.
    combine: how the global (G) and local branches combine; None means "inside" (or what
        ``global_inside`` says). "union" (the architecture figure, :meth:`paper`): n_c local
        tokens drawn over all patches, kept together with every outlier; "inside": G counts
        inside n_c; "disjoint": n_c local tokens drawn outside G, on top of G (adaptive only).
        In exact allocation "union" is cut back to n_c (lowest local probability first,
        outliers last).
    global_inside: older spelling: True is ``combine="inside"``, False ``combine="disjoint"``.
    sampling: "sample" (seeded draws without replacement, the paper) or "topk" (deterministic).
    seed: view v of every image draws with ``seed * 65536 + v``, so an image keeps the same
        tokens alone or in any batch.
    compress_global: also compress the thumbnail / global view (the paper leaves it whole).
    group_pool: how grouped mode (DocOwl's 1x4 groups) pools patch attention over a group:
        "sum" (the group's attention mass), "mean" or "max". It gives the groups' sampling
        distribution, and their global scores with ``group_outliers="group"``.
    group_outliers: grouped mode's global test: "patch" (default, the figure selects patches:
        IQR outliers among the patch scores, a group holding one is global) or "group" (IQR
        outliers among the ``group_pool``-pooled group scores).
    """

    allocation: str = "exact"
    scale: float | None = None
    low_layer: int | None = None
    deep_layer: int = -2
    key_heads: str = "concat"
    tau: float = 0.9
    min_similar: int = 8
    iqr_k: float = 1.5
    combine: str | None = None
    global_inside: bool | None = None
    sampling: str = "sample"
    seed: int = 0
    compress_global: bool = False
    group_pool: str = "sum"
    group_outliers: str = "patch"

    def validate(self) -> None:
        check_choice("allocation", self.allocation, ("adaptive", "exact"))
        check_choice("key_heads", self.key_heads, KEY_HEADS)
        check_choice("sampling", self.sampling, SAMPLINGS)
        check_choice("group_pool", self.group_pool, GROUP_POOLS)
        check_choice("group_outliers", self.group_outliers, GROUP_OUTLIERS)
        if self.combine is not None:
            check_choice("combine", self.combine, COMBINES)
        if self.global_inside is not None:
            if not isinstance(self.global_inside, bool):
                raise TypeError(f"global_inside must be True, False or None, got {self.global_inside!r}")
            legacy = "inside" if self.global_inside else "disjoint"
            if self.combine is not None and self.combine != legacy:
                raise ValueError(
                    f"global_inside={self.global_inside} means combine={legacy!r}, but combine="
                    f"{self.combine!r} was passed; pass combine only"
                )
        if self.combination == "disjoint" and self.allocation == "exact":
            raise ValueError(
                "combine='disjoint' keeps the outliers on top of each view's budget, so the total "
                "cannot be exact; use allocation='adaptive', or combine='inside' or 'union'"
            )
        if self.scale is not None and not (isinstance(self.scale, (int, float)) and self.scale > 0):
            raise ValueError(f"scale must be a number > 0 or None (use ratio), got {self.scale!r}")
        if self.scale is not None and self.allocation != "adaptive":
            raise ValueError("scale applies to allocation='adaptive'; pass allocation='adaptive' with it")
        if not -1.0 <= self.tau <= 1.0:
            raise ValueError(f"tau is a cosine similarity threshold in [-1, 1], got {self.tau}")
        if (
            isinstance(self.min_similar, bool)
            or not isinstance(self.min_similar, int)
            or self.min_similar < 1
        ):
            raise ValueError(f"min_similar must be an int >= 1, got {self.min_similar!r}")
        if not self.iqr_k >= 0:
            raise ValueError(f"iqr_k must be >= 0, got {self.iqr_k}")
        for name in ("low_layer", "deep_layer"):
            value = getattr(self, name)
            if value is None and name == "low_layer":
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(
                    f"{name} must be an int layer index (negative counts from the end), got {value!r}"
                )

    @classmethod
    def paper(cls, **overrides: Any) -> TokenCorrConfig:
        """The architecture figure's reading: ``n_c = ceil(rho_c N_c)`` local draws over all
        patches, united with every IQR outlier (scale 1, ratio unused; grouped mode: per-patch
        outliers)."""
        base: dict[str, Any] = {
            "ratio": 1.0,
            "scale": 1.0,
            "allocation": "adaptive",
            "group_outliers": "patch",
        }
        if "global_inside" not in overrides:
            base["combine"] = "union"
        return cls(**{**base, **overrides})

    @property
    def combination(self) -> str:
        """The branch combination in force: ``combine``, else ``global_inside``'s, else "inside"."""
        if self.combine is not None:
            return self.combine
        if self.global_inside is False:
            return "disjoint"
        return "inside"

    @property
    def is_off(self) -> bool:
        """True when nothing is dropped: ratio 1.0 without an explicit adaptive ``scale``."""
        return self.ratio >= 1.0 and (self.allocation == "exact" or self.scale is None)

    def content_dependence(self) -> str:
        if self.allocation != "exact":
            return f"allocation={self.allocation!r} (use allocation='exact')"
        return ""

    def resolve_layers(self, num_layers: int) -> tuple[int, int]:
        """Absolute (low, deep) layer indices for a tower of ``num_layers`` layers."""
        out = []
        for name in ("low_layer", "deep_layer"):
            value = getattr(self, name)
            if value is None:
                value = num_layers // 12
            layer = value + num_layers if value < 0 else value
            if not 0 <= layer < num_layers:
                raise ValueError(
                    f"{name}={value} is outside a vision tower of {num_layers} layers; "
                    f"use 0..{num_layers - 1} or -{num_layers}..-1"
                )
            out.append(layer)
        return out[0], out[1]

    def capture_layers(self, score_layer: int, num_layers: int) -> tuple[set[int], set[int]]:
        return set(self.resolve_layers(num_layers)), set()


@dataclass
class ViewSelection:
    """What ``tokencorr`` chose in one view.

    kept: long [k] kept units (patches, or groups in grouped mode) in raster order.
    global_units / sampled: long, the kept units that are IQR outliers (global) / the other
        kept units, drawn from the local distribution; disjoint, together ``kept`` (both empty
        for an uncompressed view).
    density: rho of the view (computed for every view). units: selectable valid units.
    budget: n_c, the number of local draws (units when uncompressed); with ``combine="union"``
        or "disjoint" in adaptive mode ``k`` may exceed it by up to |G|.
    compressed: whether the view was compressed.
    redundant: how many valid patches were redundant.
    """

    kept: Tensor
    global_units: Tensor
    sampled: Tensor
    density: float
    units: int
    budget: int
    compressed: bool
    redundant: int = 0

    def info(self) -> dict[str, Any]:
        """Plain per-view stats (what :attr:`ViewOutput.info` holds)."""
        return {
            "density": self.density,
            "redundant": self.redundant,
            "tokens": self.units,
            "budget": self.budget,
            "kept": int(self.kept.numel()),
            "global": self.global_units,
            "sampled": self.sampled,
            "compressed": self.compressed,
        }


def view_generator(seed: int, view: int) -> torch.Generator:
    """The CPU generator view ``view`` draws from."""
    return torch.Generator().manual_seed(seed * 65536 + view)


def plan_views(
    low: LayerQK,
    deep: LayerQK,
    config: TokenCorrConfig,
    compress: list[bool],
    valid: Tensor | None = None,
    grid: tuple[int, int] | None = None,
    group: tuple[int, int] = (1, 1),
) -> list[ViewSelection]:
    """Run steps A-D on every view of one image.

    Args:
        low, deep: captured inputs of layers ``low_layer`` and ``deep_layer``; keys
            [V, 1+N, H, dh], q_cls [V, H, dh].
        compress: per view, whether to compress it (an uncompressed view keeps every valid unit).
        valid: optional bool [V, N] of patches that exist (LLaVA-NeXT unpadding).
        grid, group: with a group other than (1, 1), units are ``group`` windows of the
            ``grid`` patch grid (DocOwl's H-Reducer: (32, 32), (1, 4)); a group is valid when all
            its patches are.
    Returns:
        one :class:`ViewSelection` per view; unit indices are patch positions, or group
        positions in the group grid's raster order.
    """
    num_views, n = low.keys.shape[0], low.keys.shape[1] - 1
    if deep.keys.shape[:2] != low.keys.shape[:2]:
        raise ValueError(
            f"low and deep layer keys differ in shape: {tuple(low.keys.shape)} vs {tuple(deep.keys.shape)}"
        )
    if len(compress) != num_views:
        raise ValueError(f"compress has {len(compress)} flags for {num_views} views")
    device = low.keys.device
    if valid is None:
        valid = torch.ones(num_views, n, dtype=torch.bool, device=device)
    valid = valid.to(device)
    density, redundant = information_density(
        patch_keys(low, config.key_heads), config.tau, config.min_similar, valid
    )
    p_low, p_deep, unit_valid = cls_patch_probs(low), cls_patch_probs(deep), valid
    grouped = tuple(group) != (1, 1)
    if grouped:
        if grid is None:
            raise ValueError("grouped mode needs the patch grid (rows, cols)")
        p_low = pool_groups(p_low, grid, group, config.group_pool)
        unit_valid = pool_groups(valid.float(), grid, group, "mean") == 1.0

    def outliers_of(v: int) -> tuple[Tensor, Tensor]:
        """View v's outlier mask and the scores that rank it, per unit."""
        if grouped:
            return group_outliers(
                p_deep[v], valid[v], grid, group, config.iqr_k, config.group_outliers, config.group_pool
            )
        return iqr_outliers(p_deep[v], config.iqr_k, valid[v]), p_deep[v]

    units = unit_valid.sum(1).cpu()
    flags = [bool(c) and not config.is_off for c in compress]
    chosen = [v for v in range(num_views) if flags[v]]
    budgets = units.tolist()
    if chosen and config.allocation == "exact":
        # ratio counts every view: the views left whole take their share of the total first.
        total = keep_count(int(units.sum()), config.ratio)
        whole = int(units.sum()) - int(units[chosen].sum())
        if total - whole < len(chosen):  # too small to leave any view whole: compress them all
            chosen = [v for v in range(num_views) if int(units[v]) > 0 and not config.is_off]
            flags = [v in chosen for v in range(num_views)]
            whole = 0
        got = exact_budgets(density[chosen].cpu(), units[chosen], total - whole)
        for v, b in zip(chosen, got):
            budgets[v] = b
    elif chosen:
        scale = config.ratio if config.scale is None else float(config.scale)
        got = adaptive_budgets(density[chosen].cpu(), units[chosen], scale)
        for v, b in zip(chosen, got):
            budgets[v] = b

    empty = torch.empty(0, dtype=torch.long, device=device)
    out = []
    for v in range(num_views):
        common = dict(density=float(density[v]), units=int(units[v]), redundant=int(redundant[v].sum()))
        if not flags[v]:
            kept = unit_valid[v].nonzero().squeeze(1)
            out.append(ViewSelection(kept, empty, empty, budget=int(units[v]), compressed=False, **common))
            continue
        outliers, global_scores = outliers_of(v)
        kept, glob, local = select_view(
            global_scores,
            p_low[v],
            budgets[v],
            unit_valid[v],
            combine=config.combination,
            sampling=config.sampling,
            generator=view_generator(config.seed, v),
            outliers=outliers,
            exact=config.allocation == "exact",
        )
        out.append(ViewSelection(kept, glob, local, budget=budgets[v], compressed=True, **common))
    return out


def view_valid_mask(tokens: ImageTokens) -> Tensor:
    """bool [V, N]: the thumbnail's tokens all exist; a crop's only inside the unpadded region."""
    num_views, n = tokens.features.shape[:2]
    valid = torch.ones(num_views, n, dtype=torch.bool, device=tokens.features.device)
    if tokens.layout.has_crops:
        valid[1:] = tokens.layout.crop_valid_mask(tokens.features.device)
    return valid


@register_method(
    "tokencorr",
    TokenCorrConfig,
    "token-correlation-guided adaptive per-crop sampling (reconstructed; official code unreleased)",
)
def tokencorr(tokens: ImageTokens, config: TokenCorrConfig) -> list[ViewOutput]:
    """Compress one image (LLaVA-NeXT anyres: thumbnail + crops). One ViewOutput per view.

    Each output's ``info`` holds the view's stats (:meth:`ViewSelection.info`: density, tokens,
    budget, kept, global / sampled positions, compressed).
    """
    low, deep = config.resolve_layers(tokens.num_layers)
    missing = sorted({low, deep} - set(tokens.qk))
    if missing:
        raise KeyError(f"tokencorr needs the q/k of vision layers {missing}; captured: {sorted(tokens.qk)}")
    layout = tokens.layout
    group = tuple(layout.patch_group)
    if group != (1, 1):  # tokens group patches (DocOwl's H-Reducer): choose groups by patch scores
        h, w = layout.view_grid
        grid = (h * group[0], w * group[1])
        plans = select_groups(tokens.qk[low], tokens.qk[deep], config, grid, group, layout.global_view)
    else:
        compress = [config.compress_global or not layout.has_crops] + [True] * (tokens.num_views - 1)
        plans = plan_views(tokens.qk[low], tokens.qk[deep], config, compress, view_valid_mask(tokens))
    outs = []
    for v, plan in enumerate(plans):
        out = ViewOutput.select(tokens.features[v], plan.kept.to(tokens.features.device))
        out.info = plan.info()
        outs.append(out)
    return outs


def select_groups(
    low: LayerQK,
    deep: LayerQK,
    config: TokenCorrConfig,
    grid: tuple[int, int] = (32, 32),
    group: tuple[int, int] = (1, 4),
    global_view: bool = True,
) -> list[ViewSelection]:
    """Grouped ``tokencorr`` for mPLUG-DocOwl1.5: which H-Reducer groups of each view to keep.

    Args:
        low, deep: the ViT's captured inputs at layers ``config.resolve_layers(num_layers)``
            for every view of one image: keys [V, 1+R*C, H, dh] ([CLS] first, patches in raster
            order of the R x C = ``grid``), q_cls [V, H, dh].
        grid: patch grid of a view (32 x 32 for 448 px and 14 px patches).
        group: patches that make one H-Reducer output (1 x 4 for conv_shape "1x4").
        global_view: view 0 is DocOwl's global (whole-page) view, left whole unless
            ``config.compress_global``; every other view is a crop and is compressed.
    Returns:
        per view a :class:`ViewSelection` whose ``kept`` are group indices in raster order of the
        (R/gh) x (C/gw) group grid, i.e. H-Reducer output positions 0..255; at least one per
        view. Add ``vit_eos`` with :func:`hreducer_keep_index`. Density is per patch; the
        budget counts groups (``ceil(rho * 256 * scale)`` in adaptive mode).
    """
    compress = [not global_view or config.compress_global] + [True] * (low.keys.shape[0] - 1)
    return plan_views(low, deep, config, compress, grid=grid, group=group)


def hreducer_keep_index(kept_groups: Tensor, num_groups: int = 256) -> Tensor:
    """Indices into the H-Reducer's ``num_groups + 1`` outputs: the kept groups, then ``vit_eos``."""
    eos = torch.tensor([num_groups], dtype=torch.long, device=kept_groups.device)
    return torch.cat([kept_groups.long(), eos])


def group_patch_index(
    kept_groups: Tensor, grid: tuple[int, int] = (32, 32), group: tuple[int, int] = (1, 4)
) -> Tensor:
    """long [k, gh*gw]: the patch positions (raster order of ``grid``) that make each kept group.

    ``patches[group_patch_index(...)]`` gives the [k, gh*gw, C] inputs of the kept H-Reducer
    outputs, for running the reducer on the kept groups only.
    """
    cols, (gh, gw) = grid[1], group
    gcols = cols // gw
    gr, gc = kept_groups.long() // gcols, kept_groups.long() % gcols
    dr = torch.arange(gh, device=kept_groups.device).repeat_interleave(gw)
    dc = torch.arange(gw, device=kept_groups.device).repeat(gh)
    return (gr[:, None] * gh + dr[None]) * cols + gc[:, None] * gw + dc[None]
