"""Exact torch implementations of the compression ops (the fallback path on every device).

Two versions of each similarity op live here:

- ``naive_*``: the whole ``[B, Na, Nb]`` similarity matrix at once. Short and obviously right; kept as
  the ground truth for tests and as the baseline of ``evals/bench_kernels.py``.
- the public names (``cosine_topk``, ``energy_score``, ``redundancy_count``, ``cls_attention_logits``):
  the same arithmetic over blocks of ``chunk_size`` rows, so the largest intermediate is
  ``[B, chunk_size, Nb]`` and memory stays O(N x chunk) instead of O(N^2). Per row they compute the same
  float32 values as the naive version (up to the rounding of a smaller matmul), hence the same top-k
  indices except between tied scores.

Shapes: B batch, T / N tokens, H heads, dh head dim, D feature dim. All results are float32 (or long).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

DEFAULT_CHUNK_ROWS = 256
"""Rows of the similarity matrix held at once by the chunked ops (``chunk_size=None``)."""

DEFAULT_CHUNK_KEYS = 1024
"""Keys per block of :func:`cls_attention_logits` (``chunk_size=None``)."""


# --------------------------------------------------------------------------------------------------
# Input checks shared by the chunked reference and the dispatching public ops.


def check_tokens(x: Tensor, mask: Tensor | None, name: str = "x") -> None:
    """Raise ValueError unless ``x`` is [B, N, D] floating point and ``mask`` is None or bool [B, N]."""
    if x.dim() != 3:
        raise ValueError(f"{name} must be [B, N, D], got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if mask is not None:
        if mask.dtype != torch.bool:
            raise ValueError(f"mask for {name} must be a bool tensor, got {mask.dtype}")
        if tuple(mask.shape) != tuple(x.shape[:2]):
            raise ValueError(
                f"mask for {name} must be [B, N] = {tuple(x.shape[:2])}, got {tuple(mask.shape)}"
            )


def check_pair(a: Tensor, b: Tensor, k: int, mask_a: Tensor | None, mask_b: Tensor | None) -> None:
    """Checks for :func:`cosine_topk`: matching batch and feature sizes and ``1 <= k <= Nb``."""
    check_tokens(a, mask_a, "a")
    check_tokens(b, mask_b, "b")
    if a.shape[0] != b.shape[0] or a.shape[2] != b.shape[2]:
        raise ValueError(f"a {tuple(a.shape)} and b {tuple(b.shape)} must share batch and feature sizes")
    if not 1 <= k <= b.shape[1]:
        raise ValueError(f"k must be in [1, Nb={b.shape[1]}], got {k}")


def check_qk(q_cls: Tensor, keys: Tensor) -> None:
    """Checks for :func:`cls_attention_logits`: q [B, H, dh] against keys [B, T, H, dh]."""
    if q_cls.dim() != 3 or keys.dim() != 4:
        raise ValueError(
            f"q_cls must be [B, H, dh] and keys [B, T, H, dh], got {tuple(q_cls.shape)} and {tuple(keys.shape)}"
        )
    b, h, dh = q_cls.shape
    if keys.shape[0] != b or keys.shape[2] != h or keys.shape[3] != dh:
        raise ValueError(f"keys {tuple(keys.shape)} do not match q_cls {tuple(q_cls.shape)} in B, H or dh")


def _rows(chunk_size: int | None) -> int:
    rows = DEFAULT_CHUNK_ROWS if chunk_size is None else int(chunk_size)
    if rows < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return rows


# --------------------------------------------------------------------------------------------------
# Naive full-matrix versions (ground truth and benchmark baseline).


def naive_cls_attention_logits(q_cls: Tensor, keys: Tensor, scale: float) -> Tensor:
    """Pre-softmax attention logits of the [CLS] query against every key, in one matmul.

    Args:
        q_cls: [B, H, dh] query of token 0 per head.
        keys: [B, T, H, dh] keys of all tokens (token 0 included).
        scale: softmax scale of the layer (dh ** -0.5).
    Returns:
        [B, H, T] float32 logits ``scale * q . k``.
    """
    return scale * (keys.float().permute(0, 2, 1, 3) @ q_cls.float().unsqueeze(-1)).squeeze(-1)


def naive_cosine_topk(
    a: Tensor, b: Tensor, k: int = 1, mask_a: Tensor | None = None, mask_b: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """:func:`cosine_topk` through the full [B, Na, Nb] similarity matrix."""
    sim = F.normalize(a.float(), dim=-1) @ F.normalize(b.float(), dim=-1).transpose(1, 2)
    if mask_b is not None:
        sim = sim.masked_fill(~mask_b[:, None, :], float("-inf"))
    scores, idx = sim.topk(k, dim=-1)
    if mask_a is not None:
        scores = scores.masked_fill(~mask_a[..., None], float("-inf"))
        idx = idx.masked_fill(~mask_a[..., None], 0)
    return scores, idx


def naive_energy_score(
    x: Tensor, margin: float, temperature: float = 1.0, mask: Tensor | None = None
) -> Tensor:
    """:func:`energy_score` through the full [B, N, N] similarity matrix."""
    xn = F.normalize(x.float(), dim=-1)
    e = F.elu((xn @ xn.transpose(1, 2) - margin) / temperature)
    if mask is None:
        return e.mean(-1)
    m = mask.to(e.dtype)
    out = (e * m[:, None, :]).sum(-1) / m.sum(-1, keepdim=True).clamp_min(1)
    return out.masked_fill(~mask, float("-inf"))


def naive_redundancy_count(x: Tensor, threshold: float, mask: Tensor | None = None) -> Tensor:
    """:func:`redundancy_count` through the full [B, N, N] similarity matrix."""
    xn = F.normalize(x.float(), dim=-1)
    above = (xn @ xn.transpose(1, 2)) > threshold
    above &= ~torch.eye(x.shape[1], dtype=torch.bool, device=x.device)
    if mask is not None:
        above &= mask[:, None, :] & mask[:, :, None]
    return above.sum(-1)


# --------------------------------------------------------------------------------------------------
# Chunked versions (the public reference path).


def cls_attention_logits(
    q_cls: Tensor, keys: Tensor, scale: float, *, chunk_size: int | None = None
) -> Tensor:
    """Pre-softmax attention logits of the [CLS] query against every key.

    Processes ``chunk_size`` keys at a time so that half-precision keys are never copied to float32
    as a whole (the naive version's largest intermediate is a float32 copy of ``keys``); float32
    keys need no copy and go in one matmul.

    Args:
        q_cls: [B, H, dh] query of token 0 per head.
        keys: [B, T, H, dh] keys of all tokens (token 0 included).
        scale: softmax scale of the layer (dh ** -0.5).
        chunk_size: keys per block (default :data:`DEFAULT_CHUNK_KEYS`).
    Returns:
        [B, H, T] float32 logits ``scale * q . k``.
    """
    check_qk(q_cls, keys)
    rows = DEFAULT_CHUNK_KEYS if chunk_size is None else _rows(chunk_size)
    t = keys.shape[1]
    if t <= rows or keys.dtype == torch.float32:
        # One block, or float32 keys (no copy to bound): the naive expression is the chunked one.
        return naive_cls_attention_logits(q_cls, keys, scale)
    q = q_cls.float().unsqueeze(-1)  # [B, H, dh, 1]
    out = torch.empty(keys.shape[0], keys.shape[2], t, dtype=torch.float32, device=keys.device)
    for s in range(0, t, rows):
        e = min(s + rows, t)
        out[:, :, s:e] = (keys[:, s:e].float().permute(0, 2, 1, 3) @ q).squeeze(-1)
    return out.mul_(scale)


def cosine_topk(
    a: Tensor,
    b: Tensor,
    k: int = 1,
    mask_a: Tensor | None = None,
    mask_b: Tensor | None = None,
    *,
    chunk_size: int | None = None,
) -> tuple[Tensor, Tensor]:
    """For each row of ``a``, the ``k`` most cosine-similar rows of ``b``.

    Args:
        a: [B, Na, D]; b: [B, Nb, D].
        k: neighbours per row, ``1 <= k <= Nb``.
        mask_a: optional bool [B, Na]; False rows get score -inf and index 0.
        mask_b: optional bool [B, Nb]; False columns are never chosen (a row with fewer than ``k``
            valid columns gets -inf scores at its tail, with arbitrary in-range indices there).
        chunk_size: rows of ``a`` per block (default :data:`DEFAULT_CHUNK_ROWS`).
    Returns:
        scores [B, Na, k] float32 (descending), indices long [B, Na, k].
    """
    check_pair(a, b, k, mask_a, mask_b)
    rows = _rows(chunk_size)
    bn_t = F.normalize(b.float(), dim=-1).transpose(1, 2)  # [B, D, Nb]
    n_a = a.shape[1]
    scores = torch.empty(a.shape[0], n_a, k, dtype=torch.float32, device=a.device)
    idx = torch.empty(a.shape[0], n_a, k, dtype=torch.long, device=a.device)
    for s in range(0, n_a, rows):
        e = min(s + rows, n_a)
        sim = F.normalize(a[:, s:e].float(), dim=-1) @ bn_t  # [B, rows, Nb]
        if mask_b is not None:
            sim.masked_fill_(~mask_b[:, None, :], float("-inf"))
        scores[:, s:e], idx[:, s:e] = sim.topk(k, dim=-1)
    if mask_a is not None:
        scores.masked_fill_(~mask_a[..., None], float("-inf"))
        idx.masked_fill_(~mask_a[..., None], 0)
    return scores, idx


def energy_score(
    x: Tensor,
    margin: float,
    temperature: float = 1.0,
    mask: Tensor | None = None,
    *,
    chunk_size: int | None = None,
) -> Tensor:
    """PiToMe energy: ``E_i = mean_j ELU((cos(x_i, x_j) - margin) / temperature)``, j over valid tokens.

    Args:
        x: [B, N, D]; mask: optional bool [B, N] of valid tokens (invalid rows get -inf).
        chunk_size: rows per block (default :data:`DEFAULT_CHUNK_ROWS`).
    Returns:
        [B, N] float32.
    """
    check_tokens(x, mask)
    rows = _rows(chunk_size)
    xn = F.normalize(x.float(), dim=-1)
    xn_t = xn.transpose(1, 2)
    n = x.shape[1]
    out = torch.empty(x.shape[0], n, dtype=torch.float32, device=x.device)
    for s in range(0, n, rows):
        e = min(s + rows, n)
        sim = xn[:, s:e] @ xn_t  # [B, rows, N]; every step below is in place
        F.elu_(sim.sub_(margin).div_(temperature))
        if mask is None:
            out[:, s:e] = sim.mean(-1)
        else:
            out[:, s:e] = sim.masked_fill_(~mask[:, None, :], 0.0).sum(-1)
    if mask is None:
        return out
    out /= mask.sum(-1, keepdim=True).clamp_min(1).to(out.dtype)
    return out.masked_fill_(~mask, float("-inf"))


def redundancy_count(
    x: Tensor, threshold: float, mask: Tensor | None = None, *, chunk_size: int | None = None
) -> Tensor:
    """Per token, how many OTHER valid tokens have cosine similarity above ``threshold``.

    Args:
        x: [B, N, D]; mask: optional bool [B, N] (invalid tokens neither count nor are counted: 0).
        chunk_size: rows per block (default :data:`DEFAULT_CHUNK_ROWS`).
    Returns:
        long [B, N].
    """
    check_tokens(x, mask)
    rows = _rows(chunk_size)
    xn = F.normalize(x.float(), dim=-1)
    xn_t = xn.transpose(1, 2)
    n = x.shape[1]
    out = torch.empty(x.shape[0], n, dtype=torch.long, device=x.device)
    for s in range(0, n, rows):
        e = min(s + rows, n)
        above = (xn[:, s:e] @ xn_t) > threshold  # [B, rows, N]
        r = torch.arange(e - s, device=x.device)
        above[:, r, r + s] = False  # a token is not redundant with itself
        if mask is not None:
            above &= mask[:, None, :]
            above &= mask[:, s:e, None]
        out[:, s:e] = above.sum(-1)
    return out
