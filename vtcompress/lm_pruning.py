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


def dart_keep(
    normed: Tensor,
    key_norms: Tensor,
    candidates: Tensor,
    text: Tensor,
    per_pivot: list[list[int]],
    image_pivots: list[int],
    text_pivots: list[int],
) -> Tensor:
    """DART's duplication-aware selection, row by row (its greedy loop is sequential).

    ``normed``: [B, L, d] hidden states after the final norm; ``key_norms``: [B, L] pivot
    scores; ``candidates``: bool [B, L] image tokens; ``text``: bool [B, L] text tokens that may
    be pivots; ``per_pivot[b]``: how many tokens each pivot of row b adds, in pivot order (image
    pivots, then text pivots, each in ascending position). Row b's pivots are its
    ``image_pivots[b]`` candidates and ``text_pivots[b]`` text tokens of largest key norm (ties:
    lower index first); the image pivots are kept.
    Each pivot then adds the not-yet-kept candidates *least* cosine-similar to it (ties: lower
    index first). Returns bool [B, L].
    """
    keep = torch.zeros_like(candidates)
    unit = torch.nn.functional.normalize(normed.float(), dim=-1)
    for b in range(candidates.shape[0]):
        pivots = []
        for pool, n in ((candidates[b], image_pivots[b]), (text[b], text_pivots[b])):
            top = top_by_score(key_norms[b : b + 1], pool[None], torch.tensor([n], device=pool.device))[0]
            pivots.append(top.nonzero().squeeze(1))
        keep[b, pivots[0]] = True
        for pivot, n in zip(torch.cat(pivots).tolist(), per_pivot[b]):
            free = (candidates[b] & ~keep[b]).nonzero().squeeze(1)
            if n <= 0 or free.numel() == 0:
                continue
            sim = unit[b, free] @ unit[b, pivot]
            order = torch.sort(sim, stable=True).indices[:n]
            keep[b, free[order]] = True
    return keep


def dart_shares(count: int, image_pivots: int, pivots: int) -> list[int]:
    """Exact budget: the ``count - image_pivots`` tokens after the image pivots, split over
    ``pivots`` pivots (the first ones get one more where it does not divide)."""
    extra = max(count - image_pivots, 0)
    base, rest = divmod(extra, max(pivots, 1))
    return [base + (i < rest) for i in range(pivots)]
