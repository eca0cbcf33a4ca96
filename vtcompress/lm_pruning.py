"""Pruning visual tokens inside the language model: the placement's config base and its pure
scoring and selection functions.

A method of this placement drops image tokens *between* decoder layers: stage ``s`` keeps, in
every sequence of the batch, ``keep_count(N, fraction_s)`` of the ``N`` image tokens the sequence
entered the language model with, before decoder layer ``K_s``. Layers ``< K_0`` see every token;
the KV cache of layers ``>= K_s`` only ever holds what stage ``s`` kept. Kept tokens keep their
original positions. Which tokens count as image tokens is the host's business (image
placeholders; LLaVA-NeXT's and OneVision's newline tokens are structure, always kept and not
counted, the ratio convention of docs/budget.md).

The functions here take tensors and return tensors; a host computes what they need from its
model (see ``vtcompress.integrations.lm_prune``) and passes it in :class:`LMStageInputs`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from vtcompress.budget import keep_count
from vtcompress.config import IN_LM, CompressionConfig
from vtcompress.layout import Layout

NEEDS_HOST = (
    "it runs on hosts that own the KV cache, positions and generate (the transformers hosts); "
    "a serving engine that fixes each request's KV layout before the model runs cannot drop tokens mid-model"
)


@dataclass
class LMStageInputs:
    """What one stage sees at the input of decoder layer ``K`` (``B`` rows of length ``L``).

    ``candidates`` (bool [B, L]): image tokens that may be dropped; ``valid`` (bool [B, L]):
    tokens attended to (not padding); ``text`` (bool [B, L]): the valid tokens after the last
    image placeholder (the instruction); ``counts`` (long [B]): image tokens to keep per row;
    ``hidden`` ([B, L, d]): the input of layer ``K``; ``previous_hidden`` ([B, L, d]): the input
    of layer ``K - 1`` (same tokens: the stage before ``K - 1`` dropped nothing in between).
    ``last_attention(layer, hidden)`` -> float32 [B, L]: the attention the last token pays to
    every token under ``layer``'s input norm, q/k projections and RoPE at the current positions
    (softmax per head over the valid keys, then the mean over heads); ``post_rope_keys(layer,
    hidden)`` -> [B, H_kv, L, D_h]; ``final_norm(hidden)`` -> [B, L, d]: the model's last norm.
    ``keep_per_row``, ``candidates_per_row``, ``text_per_row``: ``counts``, ``candidates.sum(1)``
    and ``text.sum(1)`` as Python ints, known on the host: a method that needs sizes reads these
    instead of the device (on a GPU each read is a synchronisation).
    """

    candidates: Tensor
    valid: Tensor
    text: Tensor
    counts: Tensor
    hidden: Tensor
    previous_hidden: Tensor | None
    last_attention: Callable[[int, Tensor], Tensor]
    post_rope_keys: Callable[[int, Tensor], Tensor]
    final_norm: Callable[[Tensor], Tensor]
    keep_per_row: list[int]
    candidates_per_row: list[int]
    text_per_row: list[int]


@dataclass
class LMPruningConfig(CompressionConfig):
    """Base of the methods that prune inside the language model (``IN_LM`` placement).

    Subclasses say where their stages act (:meth:`stages`) and what each keeps (:meth:`select`).
    Before the language model they keep every token.
    """

    def requirements(self, score_layer: int, num_layers: int) -> dict[str, str]:
        return {IN_LM: NEEDS_HOST}

    def stages(self) -> list[tuple[int, float]]:
        """``(K, fraction)`` per stage, ``K`` increasing: before decoder layer ``K`` (0-based)
        keep ``keep_count(N, fraction)`` of a sequence's ``N`` original image tokens."""
        raise NotImplementedError

    def stage_count(self, stage: int, n: int) -> int:
        """Image tokens stage ``stage`` keeps of a sequence's ``n`` original ones."""
        return keep_count(n, self.stages()[stage][1])

    def kept_count(self, layout: Layout) -> int | None:
        """Image tokens that reach the layers after the last stage (the spec's counting rule; the
        layers before each stage still see more: FLOPs count them)."""
        n = layout.num_tokens()
        return n if self.is_off else self.stage_count(len(self.stages()) - 1, n)

    def select(self, stage: int, inputs: LMStageInputs) -> Tensor:
        """Bool [B, L]: the candidates stage ``stage`` keeps, exactly ``inputs.counts[b]`` per row."""
        raise NotImplementedError


def check_layer(name: str, layer: int) -> None:
    if isinstance(layer, bool) or not isinstance(layer, int) or layer < 1:
        raise ValueError(
            f"{name} must be a decoder layer index >= 1 (tokens are dropped before it); got {layer!r}"
        )


# --- scoring -------------------------------------------------------------------------------------
def rotate_half(x: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotary position embedding (the rotate-half convention of Llama / Qwen2 in transformers).

    ``x``: [B, H, L, D]; ``cos``, ``sin``: [B, L, D] (the model's ``position_embeddings``).
    """
    return x * cos.unsqueeze(1) + rotate_half(x) * sin.unsqueeze(1)


def last_query_attention(query: Tensor, keys: Tensor, valid: Tensor, scaling: float) -> Tensor:
    """Attention one query per row pays to every key, averaged over heads.

    ``query``: [B, H, D]; ``keys``: [B, H_kv, L, D] (H a multiple of H_kv: grouped heads share
    keys); ``valid``: bool [B, L], False keys get no weight. Softmax per head in float32 over all
    valid keys, then the mean over heads. Returns float32 [B, L].
    """
    b, h, d = query.shape
    groups = h // keys.shape[1]
    k = keys.float().repeat_interleave(groups, dim=1)  # [B, H, L, D]
    logits = torch.einsum("bhd,bhld->bhl", query.float(), k) * scaling
    logits = logits.masked_fill(~valid[:, None, :], float("-inf"))
    return logits.softmax(dim=-1).mean(dim=1)


def key_l1_norms(keys: Tensor) -> Tensor:
    """L1 norm of every token's keys, heads and head dimensions together: [B, H_kv, L, D] -> [B, L]."""
    return keys.float().abs().sum(dim=(1, 3))


# --- selection -----------------------------------------------------------------------------------
def top_by_score(scores: Tensor, candidates: Tensor, counts: Tensor) -> Tensor:
    """Per row, the ``counts[b]`` candidates with the highest scores (ties: lower index first).

    ``scores``: [B, L]; ``candidates``: bool [B, L]; ``counts``: long [B] (at most the row's
    candidates). Returns bool [B, L].
    """
    masked = scores.float().masked_fill(~candidates, float("-inf"))
    order = torch.sort(masked, dim=1, descending=True, stable=True).indices
    ranks = torch.empty_like(order).scatter_(
        1, order, torch.arange(order.shape[1], device=order.device).expand_as(order)
    )
    return (ranks < counts[:, None]) & candidates


def first_positions(mask: Tensor, n: int) -> Tensor:
    """Per row, the positions of the first ``n`` True entries in ascending order (rows with fewer
    continue with False positions): bool [B, L] -> long [B, n]. No device read."""
    return torch.argsort((~mask).to(torch.uint8), dim=1, stable=True)[:, :n]


def dart_keep(
    normed: Tensor,
    key_norms: Tensor,
    candidates: Tensor,
    text: Tensor,
    per_pivot: list[list[int]],
    image_pivots: list[int],
    text_pivots: list[int],
) -> Tensor:
    """DART's duplication-aware selection.

    ``normed``: [B, L, d] hidden states after the final norm; ``key_norms``: [B, L] pivot
    scores; ``candidates``: bool [B, L] image tokens; ``text``: bool [B, L] text tokens that may
    be pivots; ``per_pivot[b]``: how many tokens each pivot of row b adds, in pivot order (image
    pivots, then text pivots, each in ascending position). Row b's pivots are its
    ``image_pivots[b]`` candidates and ``text_pivots[b]`` text tokens of largest key norm (ties:
    lower index first); the image pivots are kept.
    Each pivot then adds the not-yet-kept candidates *least* cosine-similar to it (ties: lower
    index first). Returns bool [B, L].

    The greedy loop is sequential over pivots; the rows run together (pivot ``j`` of every row at
    once), every size taken from the host lists, so nothing is read back from the device.
    """
    b, _, d = normed.shape
    device = candidates.device
    unit = torch.nn.functional.normalize(normed.float(), dim=-1)
    image_top = top_by_score(key_norms, candidates, torch.tensor(image_pivots, device=device))
    text_top = top_by_score(key_norms, text, torch.tensor(text_pivots, device=device))
    most_image = max(image_pivots, default=0)
    positions = torch.cat(
        [first_positions(image_top, most_image), first_positions(text_top, max(text_pivots, default=0))],
        dim=1,
    )
    # Column in ``positions`` of row b's pivot j: its image pivots, then its text pivots.
    pivot_count = max((pi + pt for pi, pt in zip(image_pivots, text_pivots)), default=0)
    columns = [
        [j if j < pi else most_image + j - pi if j < pi + pt else 0 for j in range(pivot_count)]
        for pi, pt in zip(image_pivots, text_pivots)
    ]
    keep = image_top.clone()
    if pivot_count == 0:
        return keep
    pivots = positions.gather(1, torch.tensor(columns, device=device))
    for j in range(pivot_count):
        adds = [row[j] if j < len(row) else 0 for row in per_pivot]
        most = max(adds)
        if most <= 0:
            continue
        pivot = unit.gather(1, pivots[:, j, None, None].expand(b, 1, d))  # [B, 1, d]
        free = candidates & ~keep
        sim = (unit @ pivot.transpose(1, 2))[..., 0].masked_fill(~free, float("inf"))
        order = torch.sort(sim, dim=1, stable=True).indices[:, :most]
        wanted = torch.arange(most, device=device) < torch.tensor(adds, device=device)[:, None]
        keep.scatter_(1, order, keep.gather(1, order) | (wanted & free.gather(1, order)))
    return keep


def dart_shares(count: int, image_pivots: int, pivots: int) -> list[int]:
    """Exact budget: the ``count - image_pivots`` tokens after the image pivots, split over
    ``pivots`` pivots (the first ones get one more where it does not divide)."""
    extra = max(count - image_pivots, 0)
    base, rest = divmod(extra, max(pivots, 1))
    return [base + (i < rest) for i in range(pivots)]
