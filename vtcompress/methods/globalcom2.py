"""GlobalCom²: thumbnail-guided per-crop token retention for LLaVA-NeXT "anyres" images.

Paper: "Compression with Global Guidance: Towards Training-free High-Resolution MLLMs
Acceleration" (arXiv 2501.05179). Written from the paper and the facts of its official code.

Steps for one image (thumbnail view 0, crops 1..n of an nph x npw grid, 24x24 tokens a view):
1. Score every token by the head-mean, pre-softmax attention logit of the [CLS] query in the
   last CLIP layer (the layer whose input LLaVA takes its features from).
2. Thumbnail: keep its top ``floor(576 r)`` tokens.
3. Split the thumbnail's score map into nph x npw regions; S_j = sum (or mean) of region j;
   sigma = softmax((S - max S) / tau); crop j's ratio r_j = min(r (1 + sigma_j - 1/n), 1).
4. Inside crop j: s = alpha * l / |l| + (1 - alpha) * g / |g|, with l the crop's own scores and g
   the thumbnail map bilinearly resized to the unpadded full grid and cut to the crop;
   keep the top ``floor(N_j r_j)`` tokens (N_j = the crop's tokens left after unpadding).
5. Kept crop tokens return to their grid positions; newlines per row (see ``newline``).

Modes:
* ``allocation="exact"`` (default): the total is ``floor(r * N)`` tokens for N original visual
  tokens (newlines excluded), so the count is a pure function of image size and ratio; the
  thumbnail keeps ``floor(576 r)`` and the crops share the rest in proportion to
  ``N_j (1 + sigma_j - 1/n)`` -- the paper's relative allocation -- by largest remainders.
* ``allocation="paper"``: step 3/4 exactly (count depends on the scores through the clip at 1
  and the floors). ``GlobalCom2Config.paper()`` also sets the official code's descending-score
  thumbnail order and its newline per padded row.

Deliberate deviations from the official code:

* every image of a batch uses its own scores (the official code reuses the first image's);
* features keep the model's dtype (the official code casts to float16);
* ratio 1.0 means "off" (the paper's formula would still drop tokens from crops with
  sigma_j < 1/n);
* kept crop tokens stay at their true grid positions. In a crop that unpadding cut, the
  official code writes a kept token at the position equal to its index among the crop's valid
  tokens, so such tokens land in the wrong rows relative to the newlines;
* scores are float32 logits of the captured q and k even for float16/bfloat16 models (the
  official code computes them in the model's dtype, so near-ties may rank differently);
* an image whose unpadded region is empty (a few pixels by a few thousand: LLaVA-NeXT keeps
  only the thumbnail's tokens, its crops contribute newlines at most) keeps ``floor(576 r)``
  thumbnail tokens and nothing else (the official code would resize the thumbnail map to an
  empty grid, which torch refuses).

Matched on purpose: paper-mode crop ratios are computed in float64 with the official
arithmetic (see :func:`crop_ratios`), as a crop's budget ``floor(N_j r_j)`` can move by one
token in float32. The SigLIP-style score without [CLS] (``score="mean_cos"``: -cos(x_i, mean
of the view's tokens) on the projected features) is described in the paper but absent from
its code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from vtcompress.batch import Plan, Plans, SelectedBatch, rank_mask, stacked
from vtcompress.budget import keep_count, split_budget, split_budget_rows
from vtcompress.config import CLS_ATTENTION, GLOBAL_VIEW, CompressionConfig, check_choice
from vtcompress.layout import NEWLINE_POLICIES, Layout
from vtcompress.registry import register_batch, register_method
from vtcompress.scores import cls_patch_logits
from vtcompress.tokens import ImageTokens, ViewOutput, select_views


@dataclass
class GlobalCom2Config(CompressionConfig):
    """GlobalCom² options. Defaults follow the paper (r=0.25, tau=10, alpha=0.5)."""

    allocation: str = "exact"  # "exact" | "paper"
    thumbnail_order: str = "spatial"  # "spatial" | "score" (official code)
    newline: str = "unpadded"  # "unpadded" (stock LLaVA-NeXT) | "padded" (official code) | "none"
    region_aggregation: str = "sum"  # "sum" (official code) | "mean"
    alpha: float = 0.5  # weight of the crop's own (local) score against the global one
    temperature: float = 10.0
    score: str = "cls"  # "cls" | "mean_cos" (for encoders without [CLS])

    def validate(self) -> None:
        check_choice("allocation", self.allocation, ("exact", "paper"))
        check_choice("thumbnail_order", self.thumbnail_order, ("spatial", "score"))
        check_choice("newline", self.newline, NEWLINE_POLICIES)
        check_choice("region_aggregation", self.region_aggregation, ("sum", "mean"))
        check_choice("score", self.score, ("cls", "mean_cos"))
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")

    @classmethod
    def paper(cls, ratio: float = 0.25, **overrides) -> GlobalCom2Config:
        """The official code's behaviour: paper allocation, score-ordered thumbnail, padded newlines."""
        opts = dict(allocation="paper", thumbnail_order="score", newline="padded")
        return cls(ratio=ratio, **{**opts, **overrides})

    def content_dependence(self) -> str:
        return "allocation='paper' (use allocation='exact')" if self.allocation == "paper" else ""

    def capture_layers(self, score_layer: int, num_layers: int) -> tuple[set[int], set[int]]:
        return ({score_layer} if self.score == "cls" else set()), set()

    def requirements(self, score_layer: int, num_layers: int) -> dict[str, str]:
        needs = {GLOBAL_VIEW: ""}
        if self.score == "cls":
            needs[CLS_ATTENTION] = "use score='mean_cos' for a tower without [CLS]"
        return needs


def token_scores(tokens: ImageTokens, score: str) -> Tensor:
    """[V, N] per-token importance: [CLS] logits, or -cos to the view mean (no [CLS] needed)."""
    if score == "cls":
        return cls_patch_logits(tokens, tokens.score_layer)
    x = tokens.features.float()
    return -F.cosine_similarity(x, x.mean(dim=1, keepdim=True), dim=-1)


def crop_ratios(
    thumb_scores: Tensor, rows: int, cols: int, ratio: float, temperature: float, aggregation: str
) -> Tensor:
    """Per-crop retention ratios r_j from the thumbnail's score map, in float64.

    The arithmetic is the official code's, in float64 as it does it (NumPy): S_j summed in
    float64, ``sigma = exp((S - max S) / tau) / (sum + 1e-8)``, ``r_j = r (1 + sigma_j -
    mean(sigma))`` clipped at 1 (mean(sigma) is 1/n up to the 1e-8). In paper mode a crop keeps
    ``floor(N_j r_j)``; when N_j r_j lies within float32's error of an integer, float32
    arithmetic would move that crop's budget by one token.

    Args:
        thumb_scores: [side, side] thumbnail scores ([grid_h, grid_w] for non-square views).
    Returns:
        [rows*cols] float64 ratios, row-major.
    """
    side_h, side_w = thumb_scores.shape
    device = thumb_scores.device
    ph, pw = max(side_h // rows, 1), max(side_w // cols, 1)
    ri = (torch.arange(side_h, device=device) // ph).clamp_max(rows - 1)
    ci = (torch.arange(side_w, device=device) // pw).clamp_max(cols - 1)
    region = (ri[:, None] * cols + ci[None, :]).flatten()
    n = rows * cols
    sums = torch.zeros(n, dtype=torch.float64, device=device).index_add_(
        0, region, thumb_scores.flatten().double()
    )
    if aggregation == "mean":
        sums = sums / torch.bincount(region, minlength=n).clamp_min(1)
    weights = torch.exp((sums - sums.max()) / temperature)
    sigma = weights / (weights.sum() + 1e-8)
    return (ratio * (1 + sigma - sigma.mean())).clamp_max(1.0)


def crop_scores(local: Tensor, thumb_scores: Tensor, layout: Layout, alpha: float) -> tuple[Tensor, Tensor]:
    """Combined global+local scores of every crop token.

    Args:
        local: [n, side*side] crops' own scores. thumb_scores: [side, side].
    Returns:
        scores [n, side*side] (invalid tokens -inf) and valid mask [n, side*side].
    """
    valid = layout.crop_valid_mask(local.device)
    (top, bottom), (left, right) = layout.valid_rows, layout.valid_cols
    sh, sw = layout.view_grid
    full_h, full_w = layout.rows * sh, layout.cols * sw
    full = torch.zeros(full_h, full_w, device=local.device)
    # A very thin or wide image can leave no unpadded row or column at all (LLaVA-NeXT then keeps
    # no crop token); there is nothing to resize to, and every crop has N_j = 0.
    if bottom > top and right > left:
        full[top:bottom, left:right] = F.interpolate(
            thumb_scores.float()[None, None],
            size=(bottom - top, right - left),
            mode="bilinear",
            align_corners=False,
        )[0, 0]
    glob = full.view(layout.rows, sh, layout.cols, sw).permute(0, 2, 1, 3).reshape(-1, sh * sw)
    loc = local.float()

    def unit(x: Tensor) -> Tensor:
        x = torch.where(valid, x, torch.zeros_like(x))
        return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)

    combined = alpha * unit(loc) + (1 - alpha) * unit(glob)
    return combined.masked_fill(~valid, float("-inf")), valid


def top_positions(scores: Tensor, k: int, spatial: bool = True) -> Tensor:
    """Indices of the ``k`` largest scores ([N] -> long [k]); sorted by position if ``spatial``."""
    idx = torch.topk(scores, k, sorted=True).indices
    return idx.sort().values if spatial else idx


@register_method("globalcom2", GlobalCom2Config, "thumbnail-guided per-crop retention (GlobalCom²)")
def globalcom2(tokens: ImageTokens, config: GlobalCom2Config) -> list[ViewOutput]:
    """Compress one anyres image. Returns one ViewOutput per view (thumbnail first)."""
    layout, feats = tokens.layout, tokens.features
    if not layout.global_view:
        raise ValueError(
            "globalcom2 needs a global view (the thumbnail) beside the crops; this image has none "
            "(DocOwl: keep add_global_img=True in the processor)"
        )
    # The [V, N] scores come to the CPU once (the only device sync); every choice below is made
    # there on small tensors, and the kept features move in one gather (select_views).
    scores = token_scores(tokens, config.score).cpu()  # [V, N]
    r = config.ratio
    thumb_k = keep_count(layout.view_tokens, r)
    positions = [top_positions(scores[0], thumb_k, config.thumbnail_order == "spatial")]
    if not layout.has_crops:
        return select_views(feats[:1], positions)
    thumb_map = scores[0].view(layout.view_grid)
    ratios = crop_ratios(
        thumb_map, layout.rows, layout.cols, r, config.temperature, config.region_aggregation
    )
    combined, valid = crop_scores(scores[1:], thumb_map, layout, config.alpha)
    counts = valid.sum(1)
    if config.allocation == "paper":
        # floor(N_j r_j) of the float64 product, no tolerance: the official code's int(N * r_j)
        budgets = [math.floor(c * rj) for c, rj in zip(counts.tolist(), ratios.tolist())]
    else:
        crop_total = keep_count(layout.num_tokens(), r) - thumb_k
        sigma_weight = ratios / r  # 1 + sigma_j - 1/n, possibly clipped: the paper's relative allocation
        budgets = split_budget(crop_total, counts.double() * sigma_weight, counts)
    for j, (k, n) in enumerate(zip(budgets, counts.tolist())):
        positions.append(top_positions(combined[j], min(k, n)))
    return select_views(feats, positions)


# --- batched path (exact allocation): same tokens as :func:`globalcom2`, image by image ------------
def _exact_plan(layout: Layout, config: GlobalCom2Config) -> Plan:
    """What exact mode knows from the layout and options alone (see :func:`globalcom2_batch`)."""
    r, n = config.ratio, layout.num_crops
    h, w = layout.view_grid
    thumb_k = keep_count(layout.view_tokens, r)
    plan = Plan(
        thumb_k=thumb_k, total=keep_count(layout.num_tokens(), r), budgets_thumb=torch.tensor([thumb_k])
    )
    if not layout.has_crops:
        return plan
    counts = layout.crop_valid_mask().sum(1)
    ph, pw = max(h // layout.rows, 1), max(w // layout.cols, 1)
    ri = (torch.arange(h) // ph).clamp_max(layout.rows - 1)
    ci = (torch.arange(w) // pw).clamp_max(layout.cols - 1)
    region = (ri[:, None] * layout.cols + ci[None, :]).flatten()
    cap_total = int(counts.sum())
    crop_total = min(plan["total"] - thumb_k, cap_total)
    # split_budget's rounds: one round is final unless a crop's share can reach its cap. A crop's
    # weight N_j (1 + sigma_j - mean sigma), clipped at N_j / r, is at most N_j min(2 - 1/n, 1/r),
    # every other crop's at least N_i (1 - 1/n): that bounds each share (margin for float error).
    w_max = counts.double() * min(2 - 1 / n + 1e-6, 1 / r)
    others = (cap_total - counts.double()) * max(1 - 1 / n - 1e-6, 0.0)
    bound = crop_total * w_max / (w_max + others).clamp_min(1e-300)
    one_round = bool(((bound < counts.double() - 1e-6) | (counts == 0)).all())
    valid_crops = counts > 0
    plan |= {
        "region": region,
        "region_sizes": torch.bincount(region, minlength=n).clamp_min(1),
        "counts": counts,
        "invalid": ~layout.crop_valid_mask(),
        "closed": counts[None] == 0,
        "counts_f64": counts.double(),
        "crop_total": crop_total,
        "rounds": 1 if one_round else max(int(valid_crops.sum()), 1),
    }
    return plan


_exact_plans = Plans(_exact_plan)


def _batched_crop_ratios(thumb: Tensor, plan: Plan, config: GlobalCom2Config) -> Tensor:
    """:func:`crop_ratios` of B thumbnails at once: [B, h*w] scores -> [B, n] float64."""
    dev = thumb.device
    region = plan.on("region", dev)
    n = len(plan["counts"])
    sums = torch.zeros(thumb.shape[0], n, dtype=torch.float64, device=dev).index_add_(
        1, region, thumb.double()
    )
    if config.region_aggregation == "mean":
        sums = sums / plan.on("region_sizes", dev)
    weights = torch.exp((sums - sums.amax(1, keepdim=True)) / config.temperature)
    sigma = weights / (weights.sum(1, keepdim=True) + 1e-8)
    return (config.ratio * (1 + sigma - sigma.mean(1, keepdim=True))).clamp_max(1.0)


def _batched_split(weights: Tensor, plan: Plan) -> Tensor:
    """:func:`~vtcompress.budget.split_budget` of B rows at once on the device, same arithmetic.

    weights: [B, n] float64, >= 0, zero where a crop has no token (its cap). Returns long
    [B, n]. Each round's weight sum is accumulated left to right, as Python's ``sum`` does
    (``cumsum``; a closed group adds an exact 0). With ``plan["rounds"] == 1`` no share can
    reach its cap, so the first round is final and needs no cap checks.
    """
    dev = weights.device
    caps = plan.on("counts", dev)
    closed = plan.on("closed", dev)  # crops with no token: never given one
    total = plan["crop_total"]
    if plan["rounds"] == 1:
        shares = weights / weights.cumsum(1)[:, -1:] * total
        floor = shares.floor()
        base = floor.long()
        left = total - base.sum(1, keepdim=True)
        # One token each to the largest fractional parts (ties: lower index) while any is left.
        key = (floor - shares).masked_fill(closed, float("inf"))
        return base + (key.argsort(dim=1, stable=True).argsort(dim=1) < left)
    return split_budget_rows(weights, caps, total, plan["rounds"])


@register_batch("globalcom2")
def globalcom2_batch(tokens: list[ImageTokens], config: GlobalCom2Config) -> SelectedBatch | None:
    """:func:`globalcom2` for images of one layout, exact allocation (paper mode: None, as its
    token count depends on the scores; it stays on the per-image path).

    Budgets are computed on the device: the thumbnail keeps ``floor(576 r)``, the crops share the
    rest by :func:`_batched_split`, and tokens are chosen by rank masks, so the image's total,
    ``floor(r N)``, is known on the host and nothing is read back.
    """
    layout = tokens[0].layout
    if config.allocation != "exact" or config.thumbnail_order != "spatial" or not layout.global_view:
        return None
    plan = _exact_plans(layout, config)
    b, v = len(tokens), layout.num_views
    batch = stacked(tokens)
    scores = token_scores(batch, config.score).view(b, v, -1)  # [B, V, N] float32
    dev = scores.device
    thumb_budget = plan.on("budgets_thumb", dev)
    if not layout.has_crops:
        keep = rank_mask(scores, thumb_budget)
    else:
        thumb = scores[:, 0]  # [B, N]
        ratios = _batched_crop_ratios(thumb, plan, config)
        counts = plan.on("counts_f64", dev)
        crop_budgets = _batched_split(counts * (ratios / config.ratio), plan)
        combined = _batched_crop_scores(scores[:, 1:], thumb, layout, config.alpha, plan.on("invalid", dev))
        ranked = torch.cat([scores[:, :1], combined], dim=1)
        budgets = torch.cat([thumb_budget.expand(b, 1), crop_budgets], dim=1)
        keep = rank_mask(ranked, budgets)
    features = batch.features.view(b, *tokens[0].features.shape)
    return SelectedBatch(layout, features, keep, plan["total"])


def _batched_crop_scores(
    local: Tensor, thumb: Tensor, layout: Layout, alpha: float, invalid: Tensor
) -> Tensor:
    """:func:`crop_scores` of B images: local [B, n, N], thumb [B, N] -> [B, n, N] (invalid: -inf)."""
    b = local.shape[0]
    (top, bottom), (left, right) = layout.valid_rows, layout.valid_cols
    sh, sw = layout.view_grid
    full_h, full_w = layout.rows * sh, layout.cols * sw
    if bottom > top and right > left:
        inner = F.interpolate(
            thumb.float().view(b, 1, sh, sw),
            size=(bottom - top, right - left),
            mode="bilinear",
            align_corners=False,
        )
        full = F.pad(inner, (left, full_w - right, top, full_h - bottom))  # zeros outside the unpadded region
    else:
        full = thumb.new_zeros(b, 1, full_h, full_w, dtype=torch.float32)
    glob = full.view(b, layout.rows, sh, layout.cols, sw).permute(0, 1, 3, 2, 4).reshape(b, -1, sh * sw)

    def unit(x: Tensor) -> Tensor:
        return x / x.norm(dim=2, keepdim=True).clamp_min(1e-12)

    # the resized map is already 0 outside the unpadded region
    combined = alpha * unit(local.float().masked_fill(invalid, 0)) + (1 - alpha) * unit(glob)
    return combined.masked_fill(invalid, float("-inf"))
