"""Exact torch implementations of the compression ops (the fallback path on every device).

Shapes: B batch, T / N tokens, H heads, dh head dim, D feature dim.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def cls_attention_logits(q_cls: Tensor, keys: Tensor, scale: float) -> Tensor:
    """Pre-softmax attention logits of the [CLS] query against every key.

    Args:
        q_cls: [B, H, dh] query of token 0 per head.
        keys: [B, T, H, dh] keys of all tokens (token 0 included).
        scale: softmax scale of the layer (dh ** -0.5).
    Returns:
        [B, H, T] float32 logits ``scale * q . k``.
    """
    return scale * (keys.float().permute(0, 2, 1, 3) @ q_cls.float().unsqueeze(-1)).squeeze(-1)


def cosine_topk(
    a: Tensor, b: Tensor, k: int = 1, mask_a: Tensor | None = None, mask_b: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """For each row of ``a``, the ``k`` most cosine-similar rows of ``b``.

    Args:
        a: [B, Na, D]; b: [B, Nb, D].
        mask_a: optional bool [B, Na]; False rows get score -inf and index 0.
        mask_b: optional bool [B, Nb]; False columns are never chosen.
    Returns:
        scores [B, Na, k] float32 (descending), indices long [B, Na, k].
    """
    sim = F.normalize(a.float(), dim=-1) @ F.normalize(b.float(), dim=-1).transpose(1, 2)
    if mask_b is not None:
        sim = sim.masked_fill(~mask_b[:, None, :], float("-inf"))
    scores, idx = sim.topk(k, dim=-1)
    if mask_a is not None:
        scores = scores.masked_fill(~mask_a[..., None], float("-inf"))
        idx = idx.masked_fill(~mask_a[..., None], 0)
    return scores, idx


def energy_score(x: Tensor, margin: float, temperature: float = 1.0, mask: Tensor | None = None) -> Tensor:
    """PiToMe energy: ``E_i = mean_j ELU((cos(x_i, x_j) - margin) / temperature)``, j over valid tokens.

    Args:
        x: [B, N, D]; mask: optional bool [B, N] of valid tokens (invalid rows get -inf).
    Returns:
        [B, N] float32.
    """
    xn = F.normalize(x.float(), dim=-1)
    e = F.elu((xn @ xn.transpose(1, 2) - margin) / temperature)
    if mask is None:
        return e.mean(-1)
    m = mask.to(e.dtype)
    out = (e * m[:, None, :]).sum(-1) / m.sum(-1, keepdim=True).clamp_min(1)
    return out.masked_fill(~mask, float("-inf"))


def redundancy_count(x: Tensor, threshold: float, mask: Tensor | None = None) -> Tensor:
    """Per token, how many OTHER valid tokens have cosine similarity above ``threshold``.

    Args:
        x: [B, N, D]; mask: optional bool [B, N] (invalid tokens neither count nor are counted: 0).
    Returns:
        long [B, N].
    """
    xn = F.normalize(x.float(), dim=-1)
    above = (xn @ xn.transpose(1, 2)) > threshold
    above &= ~torch.eye(x.shape[1], dtype=torch.bool, device=x.device)
    if mask is not None:
        above &= mask[:, None, :] & mask[:, :, None]
    return above.sum(-1)
