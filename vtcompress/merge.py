"""Token merging as pure, batched tensor functions: PiToMe (energy-based) and ToMe (bipartite).

Papers: "Accelerating Transformers with Spectrum-Preserving Token Merging" (PiToMe, NeurIPS 2024,
arXiv 2405.16148) and "Token Merging: Your ViT but Faster" (ToMe, ICLR 2023). Written from the
papers and from facts about their official code; no code is taken from either.

Shapes: B batch, T patch tokens (the optional [CLS] is never part of T), C channels, D metric
dims, N0 the patch count before the first merge.

One merge step is split in two, as in ToMe's ``merge.py``:

1. A *plan* (:class:`MergePlan`) decides, from a metric, which token goes where:
   :func:`pitome_plan`, :func:`pitome_bipartite_plan`, :func:`tome_plan`.
2. :func:`merge_tokens` applies a plan to any per-token tensor (features, metric, keys) with a
   size-weighted or a plain mean; :func:`merge_sizes` and :func:`merge_owner` carry the
   bookkeeping. The [CLS] token, if present, stays first and unchanged.

Source maps: ``owner`` is a long [B, N0] tensor giving, for every original patch, the slot of the
token that now holds it. Sizes, one-hot sources, the first source patch of every token (the
position that stands for a merged token in a spatial layout) and per-token source lists all
derive from it; sizes always sum to N0.

Schedules: :func:`margin_schedule` (HF CLIP: 0.9 (1 - l/L), timm: 0.75 (1 - l/L)),
:func:`exact_token_schedule` (final count = ``keep_count(N0, ratio)`` exactly),
:func:`paper_token_schedule` (the official constant per-layer keep ratio) and
:func:`tome_r_schedule` (ToMe's constant / inflected / listed r).

Deliberate deviations from the official code:
* ties in the energy sort are broken by token index (stable sort), so results do not depend
  on the sort kernel;
* merged features are accumulated in float32 (float64 stays float64) and cast back; tokens that merge with nothing are
  copied bit for bit (never ``x * s / s``);
* ``r`` is clamped to what a step can merge (``r <= T // 2``) in every step.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from torch import Tensor

from vtcompress.kernels import cosine_topk, energy_score

MergeMode = Literal["weighted", "mean"]
MERGE_MODES: tuple[str, ...] = ("weighted", "mean")

HF_CLIP_MARGIN = 0.9  # PiToMe's Hugging Face CLIP (LLaVA) path
TIMM_MARGIN = 0.75  # PiToMe's timm ViT path (DeiT, MAE)
HF_CLIP_BIPARTITE_UNTIL = 12  # the LLaVA path uses ToMe matching for layers l <= 12


# --- merge plans ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class MergePlan:
    """Where each of T input tokens goes in one merge step (the [CLS] token is not included).

    assign: long [B, T], output slot (0..T_out-1) of each input token.
    keep: long [B, T_out], the input token each output slot continues: a token kept as it is, or
        the destination that others merged into. ``assign.gather(1, keep)`` is ``arange(T_out)``.
    """

    assign: Tensor
    keep: Tensor

    @property
    def num_in(self) -> int:
        return self.assign.shape[1]

    @property
    def num_out(self) -> int:
        return self.keep.shape[1]

    @classmethod
    def identity(cls, batch: int, tokens: int, device: torch.device | str | None = None) -> MergePlan:
        """The plan that merges nothing."""
        idx = torch.arange(tokens, device=device).expand(batch, tokens)
        return cls(assign=idx, keep=idx)


@runtime_checkable
class TowerMerging(Protocol):
    """What a config that requires ``TOWER_MERGE`` (:mod:`vtcompress.config`) gives the host that
    merges inside its vision tower (``vtcompress.integrations.clip_merge``); the host owns the hooks,
    the config every decision. :class:`vtcompress.methods.merging.TokenMergingConfig` implements it.

    merge: how merged features combine ("weighted": size-weighted mean; "mean": plain mean).
    proportional_attention: whether layers after the first merge add ``log(size)`` to key logits.
    """

    merge: MergeMode
    proportional_attention: bool

    def plan(self, metric: Tensor, r: int, layer: int, num_layers: int, class_token: bool) -> MergePlan:
        """One merge step removing ``r`` tokens. metric: [B, 1+T, D] with ``class_token`` (the
        [CLS] first, never merged) else [B, T, D]; ``layer``: the tower layer whose output merges,
        of ``num_layers``."""
        ...

    def tower_schedule(self, patches: int, merge_layers: int) -> list[list[int]]:
        """For a tower input of ``patches`` patch tokens, per merge layer (``merge_layers`` of them,
        the layers before the score layer) the patch-token counts after each of its merge steps."""
        ...


def tower_merging(config: Any) -> TowerMerging:
    """``config`` as a :class:`TowerMerging`; TypeError naming what it lacks otherwise."""
    missing = [
        name
        for name in ("merge", "proportional_attention", "plan", "tower_schedule")
        if not hasattr(config, name)
    ]
    if missing:
        raise TypeError(
            f"{type(config).__name__} requires in-tower merging but lacks {', '.join(missing)} of "
            "vtcompress.merge.TowerMerging; implement them (see TokenMergingConfig)"
        )
    return config


def _plan_from_groups(num_tokens: int, kept: Tensor, dst: Tensor, src: Tensor, src_to: Tensor) -> MergePlan:
    """Build a plan with output ``[kept, dst]`` where ``src[:, i]`` merges into ``dst[:, src_to[:, i]]``.

    kept: long [B, K] tokens kept alone; dst: long [B, M] destinations; src: long [B, R] tokens
    merged away; src_to: long [B, R] index into ``dst``. All indices are input token indices.
    """
    batch = kept.shape[0]
    keep = torch.cat([kept, dst], dim=1)
    assign = torch.empty(batch, num_tokens, dtype=torch.long, device=keep.device)
    slots = torch.arange(keep.shape[1], device=keep.device).expand(batch, -1)
    assign.scatter_(1, keep, slots)
    assign.scatter_(1, src, src_to + kept.shape[1])
    return MergePlan(assign=assign, keep=keep)


def _gather_rows(x: Tensor, index: Tensor) -> Tensor:
    """``x[b, index[b]]`` for x [B, T, D] and index long [B, K] -> [B, K, D]."""
    return x.gather(1, index[..., None].expand(-1, -1, x.shape[-1]))


def pitome_energy(metric: Tensor, margin: float, temperature: float = 1.0) -> Tensor:
    """PiToMe energy of every token: ``mean_j ELU((cos(m_i, m_j) - margin) / temperature)``.

    Args:
        metric: [B, T, D] (no [CLS]); the diagonal (j = i) is part of the mean, as in the paper.
        margin: the layer's margin m_l (see :func:`margin_schedule`).
        temperature: 1 in the current official code, 0.01 in the paper-era code.
    Returns:
        [B, T] float32; high energy = many similar tokens (redundant), low = isolated.
    """
    return energy_score(metric, margin, temperature)


def pitome_plan(metric: Tensor, r: int, margin: float, temperature: float = 1.0) -> MergePlan:
    """PiToMe merge step: protect low-energy tokens, merge the 2r highest-energy ones pairwise.

    Tokens are sorted by energy, descending (ties: lower index first). The first ``2r`` are
    mergeable, split alternately into A (ranks 0, 2, 4, ..) and B (ranks 1, 3, 5, ..); every A
    token merges into its most cosine-similar B token. Output order (as the official code):
    ``[protected in energy order, B in energy order]``, ``T - r`` tokens.

    Args:
        metric: [B, T, D] (no [CLS]). r: tokens to remove, clamped to ``[0, T // 2]``.
    """
    batch, tokens = metric.shape[:2]
    r = max(0, min(int(r), tokens // 2))
    if r == 0:
        return MergePlan.identity(batch, tokens, metric.device)
    energy = pitome_energy(metric, margin, temperature)
    order = torch.sort(energy, dim=1, descending=True, stable=True).indices
    a_idx, b_idx = order[:, 0 : 2 * r : 2], order[:, 1 : 2 * r : 2]
    _, best = cosine_topk(_gather_rows(metric, a_idx), _gather_rows(metric, b_idx), k=1)
    return _plan_from_groups(tokens, order[:, 2 * r :], b_idx, a_idx, best[..., 0])


def _bipartite(
    metric: Tensor, a_idx: Tensor, b_idx: Tensor, r: int, mask_a: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """ToMe matching of A onto B: the r A tokens with the best partner score merge.

    Returns (unmerged A in descending score order, merged A, their partner's index into B).
    """
    scores, best = cosine_topk(_gather_rows(metric, a_idx), _gather_rows(metric, b_idx), k=1, mask_a=mask_a)
    # Highest best-partner score first; ties by position in A, so results do not hinge on the sort.
    edge = torch.sort(scores[..., 0], dim=1, descending=True, stable=True).indices
    src, unmerged = edge[:, :r], edge[:, r:]
    return a_idx.gather(1, unmerged), a_idx.gather(1, src), best[..., 0].gather(1, src)


def pitome_bipartite_plan(metric: Tensor, r: int, margin: float, temperature: float = 1.0) -> MergePlan:
    """The official ``pitome_bsm`` variant: ToMe matching over the energy-sorted token list.

    All T tokens sorted by energy (descending) are split alternately into A and B; the r A tokens
    with the most similar B partner merge into it; unmerged A tokens are kept. Output:
    ``[unmerged A by descending partner score, B in energy order]``.
    """
    batch, tokens = metric.shape[:2]
    r = max(0, min(int(r), tokens // 2))
    if r == 0:
        return MergePlan.identity(batch, tokens, metric.device)
    order = torch.sort(
        pitome_energy(metric, margin, temperature), dim=1, descending=True, stable=True
    ).indices
    a_idx, b_idx = order[:, 0::2], order[:, 1::2]
    unmerged, src, src_to = _bipartite(metric, a_idx, b_idx, r)
    return _plan_from_groups(tokens, unmerged, b_idx, src, src_to)


def tome_plan(metric: Tensor, r: int, class_token: bool = False) -> MergePlan:
    """ToMe bipartite soft matching on the sequence as the model holds it.

    A = tokens at even sequence positions, B = odd (with ``class_token`` the [CLS] is position
    0 and belongs to A, but never merges). Each A token's best B partner by cosine similarity;
    the r A tokens with the highest best score merge into their partners (``r <= T // 2``).
    Output ``[unmerged A, B]``: unmerged A in position order when there is a [CLS] (it must stay
    first), otherwise in descending score order, as in the official code.

    Args:
        metric: [B, 1+T, D] with ``class_token`` ([CLS] first), else [B, T, D].
    Returns:
        A plan over the T patch tokens ([CLS] excluded).
    """
    offset = int(class_token)
    batch, tokens = metric.shape[0], metric.shape[1] - offset
    r = max(0, min(int(r), tokens // 2))
    if r == 0:
        return MergePlan.identity(batch, tokens, metric.device)
    seq = torch.arange(metric.shape[1], device=metric.device).expand(batch, -1)
    a_idx, b_idx = seq[:, 0::2], seq[:, 1::2]
    mask_a = None
    if class_token:
        mask_a = torch.ones_like(a_idx, dtype=torch.bool)
        mask_a[:, 0] = False  # the [CLS] row scores -inf: never merged, always kept
    unmerged, src, src_to = _bipartite(metric, a_idx, b_idx, r, mask_a)
    if class_token:
        unmerged = unmerged.sort(dim=1).values[:, 1:]  # drop the [CLS]: it is handled outside the plan
    return _plan_from_groups(tokens, unmerged - offset, b_idx - offset, src - offset, src_to)


# --- applying a plan -----------------------------------------------------------------------------
def merge_tokens(
    x: Tensor,
    plan: MergePlan,
    sizes: Tensor | None = None,
    mode: MergeMode = "weighted",
    class_token: bool = False,
) -> Tensor:
    """Apply ``plan`` to per-token tensors.

    Args:
        x: [B, 1+T, C] with ``class_token`` ([CLS] first, returned unchanged), else [B, T, C].
        sizes: [B, T] patches held by each input token (None = all 1).
        mode: "weighted" = size-weighted mean of each group (ToMe, the PiToMe paper);
            "mean" = plain mean of each group (PiToMe's official LLaVA path).
    Returns:
        [B, 1+T_out, C] or [B, T_out, C], dtype of ``x``. A token that merged with nothing is
        copied exactly.
    """
    if mode not in MERGE_MODES:
        raise ValueError(f"mode must be one of {MERGE_MODES}, got {mode!r}")
    head, body = (x[:, :1], x[:, 1:]) if class_token else (None, x)
    if body.shape[1] != plan.num_in:
        raise ValueError(f"plan expects {plan.num_in} tokens, got {body.shape[1]}")
    batch, _, channels = body.shape
    acc = torch.promote_types(body.dtype, torch.float32)  # bf16/fp16 sums lose precision
    if mode == "weighted" and sizes is not None:
        weight = sizes.to(acc)
    else:
        weight = torch.ones(body.shape[:2], dtype=acc, device=body.device)
    total = body.new_zeros(batch, plan.num_out, channels, dtype=acc)
    total.scatter_add_(1, plan.assign[..., None].expand(-1, -1, channels), body.to(acc) * weight[..., None])
    wsum = torch.zeros(batch, plan.num_out, dtype=acc, device=body.device)
    wsum.scatter_add_(1, plan.assign, weight)
    count = torch.zeros(batch, plan.num_out, dtype=torch.long, device=body.device)
    count.scatter_add_(1, plan.assign, torch.ones_like(plan.assign))
    merged = (total / wsum[..., None]).to(body.dtype)
    out = torch.where((count == 1)[..., None], _gather_rows(body, plan.keep), merged)
    return out if head is None else torch.cat([head, out], dim=1)


def merge_sizes(plan: MergePlan, sizes: Tensor | None = None) -> Tensor:
    """Sizes after the step: long [B, T_out], the sum of each group's sizes ([B, T] in, None = 1)."""
    if sizes is None:
        sizes = torch.ones_like(plan.assign)
    out = torch.zeros(plan.keep.shape, dtype=sizes.dtype, device=sizes.device)
    return out.scatter_add_(1, plan.assign, sizes)


def merge_owner(plan: MergePlan, owner: Tensor | None = None) -> Tensor:
    """Source map after the step: long [B, N0], the output slot holding each original patch.

    ``owner`` is the map before the step (None: the step's input tokens are the original patches).
    """
    return plan.assign if owner is None else plan.assign.gather(1, owner)


def compose_plans(first: MergePlan, second: MergePlan) -> MergePlan:
    """One plan doing ``first`` then ``second`` (assignments compose; useful for bookkeeping)."""
    return MergePlan(assign=second.assign.gather(1, first.assign), keep=first.keep.gather(1, second.keep))


# --- source maps ---------------------------------------------------------------------------------
def initial_owner(batch: int, patches: int, device: torch.device | str | None = None) -> Tensor:
    """Source map before any merge: patch i is token i (long [B, N0])."""
    return torch.arange(patches, device=device).expand(batch, patches).contiguous()


def sizes_from_owner(owner: Tensor, num_tokens: int) -> Tensor:
    """long [B, T]: how many original patches each token holds (sums to N0 per row)."""
    out = torch.zeros(owner.shape[0], num_tokens, dtype=torch.long, device=owner.device)
    return out.scatter_add_(1, owner, torch.ones_like(owner))


def source_onehot(owner: Tensor, num_tokens: int) -> Tensor:
    """bool [B, T, N0]: ``[b, t, p]`` is True when token t holds original patch p."""
    return owner[:, None, :] == torch.arange(num_tokens, device=owner.device)[None, :, None]


def first_source(owner: Tensor, num_tokens: int) -> Tensor:
    """long [B, T]: the lowest original patch index each token holds (its raster representative).

    A token holding no patch (impossible for a plan built here) gets N0.
    """
    patches = owner.shape[1]
    out = torch.full((owner.shape[0], num_tokens), patches, dtype=torch.long, device=owner.device)
    idx = torch.arange(patches, device=owner.device).expand_as(owner)
    return out.scatter_reduce_(1, owner, idx, reduce="amin")


def token_sources(owner: Tensor, num_tokens: int) -> list[list[Tensor]]:
    """Per batch row, per token, the sorted long tensor of original patches it holds."""
    out = []
    for row in owner:
        order = torch.sort(row, stable=True).indices  # patches grouped by token, ascending inside
        counts = torch.bincount(row, minlength=num_tokens).tolist()
        out.append(list(torch.split(order, counts)))
    return out


# --- schedules -----------------------------------------------------------------------------------
def margin_schedule(num_layers: int, base: float = HF_CLIP_MARGIN) -> list[float]:
    """PiToMe's margin of every layer: ``m_l = base * (1 - l / L)`` for l = 0..L-1.

    ``base`` is 0.9 on Hugging Face CLIP (the LLaVA path) and 0.75 on timm ViTs.
    """
    if num_layers <= 0:
        raise ValueError(f"num_layers must be positive, got {num_layers}")
    return [base * (1 - layer / num_layers) for layer in range(num_layers)]


def uses_bipartite(layer: int, until: int = HF_CLIP_BIPARTITE_UNTIL) -> bool:
    """Whether PiToMe's Hugging Face CLIP path uses plain ToMe matching at ``layer`` (l <= 12)."""
    return layer <= until


def _check_step_counts(counts: list[int], patches: int) -> list[int]:
    prev = patches
    for count in counts:
        if not (prev + 1) // 2 <= count <= prev:
            raise AssertionError(f"invalid token schedule {counts} from {patches}")
        prev = count
    return counts


def exact_token_schedule(patches: int, keep: int, steps: int) -> list[int]:
    """Token counts after each of ``steps`` merges, ending at exactly ``keep``.

    Geometric, like a constant per-step keep ratio: ``T_s = round(N0 (keep / N0) ** (s / S))``
    for s = 1..S, with ``T_S = keep``; no step removes more than half its input.

    Raises:
        ValueError: if ``keep < ceil(N0 / 2**steps)`` (a step can at most halve the tokens).
    """
    if steps <= 0 or keep >= patches:
        return [min(keep, patches)] * max(steps, 0)
    if keep < 1 or keep * 2**steps < patches:
        raise ValueError(
            f"cannot merge {patches} tokens down to {keep} in {steps} steps (each step at most halves "
            "them); use a larger ratio or merge over more layers"
        )
    counts, prev = [], patches
    for s in range(1, steps + 1):
        target = round(patches * (keep / patches) ** (s / steps))
        # At most halve a step's input; stay low enough that the remaining steps reach ``keep``.
        lower = max((prev + 1) // 2, keep)
        upper = min(prev, keep * 2 ** (steps - s))
        prev = min(max(target, lower), upper)
        counts.append(prev)
    return _check_step_counts(counts, patches)


def paper_token_schedule(
    patches: int, layer_ratio: float, steps: int, count_cls: Sequence[bool] = ()
) -> list[int]:
    """Token counts after each merge with the official constant per-layer keep ratio ``rho``.

    Each step removes ``r = floor(T - T * rho)`` tokens (clamped to ``T // 2``), T the tokens it
    sees. The official ToMe-matching layers of the CLIP path count the [CLS] in T:
    ``count_cls[s]`` says so for step s (default: no step does).
    """
    if not 0.0 < layer_ratio <= 1.0:
        raise ValueError(f"layer_ratio must be in (0, 1], got {layer_ratio}")
    counts, tokens = [], patches
    for s in range(steps):
        seen = tokens + int(s < len(count_cls) and bool(count_cls[s]))
        r = min(math.floor(seen - seen * layer_ratio), tokens // 2) if layer_ratio < 1.0 else 0
        tokens -= max(r, 0)
        counts.append(tokens)
    return counts


def tome_r_schedule(num_layers: int, r: int | tuple[int, float] | Sequence[int]) -> list[int]:
    """Per-layer r (tokens merged in each of ``num_layers`` layers) in ToMe's conventions.

    * int: the same r in every layer.
    * tuple: always ``(r, inflection)``, inflection in [-1, 1]: a linear ramp from
      ``int(r (1 - inflection))`` in the first layer to ``2 r`` minus that in the last (values
      truncated to int), so -1 is ToMe's "decreasing schedule" (2r down to 0), 0 a constant r and
      +1 an increasing one. ``(8, -1)`` and ``(8, -1.0)`` mean the same.
    * list (any other sequence): r of each layer, padded with zeros to ``num_layers``.

    Raises ValueError on a negative r, an inflection outside [-1, 1] or a tuple that is not a pair.
    """
    if isinstance(r, tuple):
        if len(r) != 2:
            raise ValueError(
                f"a tuple r is ToMe's (r, inflection) pair, got {r!r}; give per-layer values as a list"
            )
        base, inflection = r
    elif isinstance(r, Sequence):
        values = [_merge_count(v) for v in r]
        return values + [0] * (num_layers - len(values))
    else:
        base, inflection = r, 0.0
    base = _merge_count(base)
    if isinstance(inflection, bool) or not isinstance(inflection, numbers.Real) or not -1 <= inflection <= 1:
        raise ValueError(f"inflection must be a number in [-1, 1], got {inflection!r}")
    first = int(base * (1.0 - inflection))
    step = (2 * base - 2 * first) / max(num_layers - 1, 1)
    return [int(first + step * i) for i in range(num_layers)]


def _merge_count(r: object) -> int:
    """``r`` as a count of tokens to merge (an int >= 0), or a ValueError."""
    if isinstance(r, bool) or not isinstance(r, numbers.Integral) or r < 0:
        raise ValueError(f"r must be an int >= 0 (tokens merged per layer), got {r!r}")
    return int(r)


# --- proportional attention ----------------------------------------------------------------------
def proportional_attention_qkv(
    query: Tensor, key: Tensor, value: Tensor, sizes: Tensor, scale: float, multiple: int = 8
) -> tuple[Tensor, Tensor, Tensor]:
    """Fold ToMe's proportional attention (``+ log(size)`` on every key's logit) into q, k, v.

    Appends a constant-1 channel to the queries and ``log(size) / scale`` to the keys, then pads
    the head dim with zeros to a multiple of ``multiple`` (fast SDPA kernels want that); values
    are padded to the same width. ``scale * q'.k' = scale * q.k + log(size)`` exactly, so any
    attention kernel (SDPA included, no mask needed) computes proportional attention when called
    with the ORIGINAL ``scale``; keep the first ``dh`` output channels.

    Args:
        query, key, value: [B, H, T, dh]. sizes: [B, T] patches per token ([CLS] = 1).
    Returns:
        query, key, value of head dim ``ceil((dh + 1) / multiple) * multiple``.
    """
    dh = query.shape[-1]
    width = -(-(dh + 1) // multiple) * multiple
    extra = width - dh - 1
    ones = query.new_ones(*query.shape[:-1], 1)
    bias = (sizes.to(torch.float32).log() / scale).to(key.dtype)[:, None, :, None].expand(*key.shape[:-1], 1)
    pad_q = query.new_zeros(*query.shape[:-1], extra)
    pad_k = key.new_zeros(*key.shape[:-1], extra)
    value = torch.nn.functional.pad(value, (0, width - value.shape[-1]))
    return torch.cat([query, ones, pad_q], -1), torch.cat([key, bias, pad_k], -1), value
