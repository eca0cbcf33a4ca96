"""Exact torch implementations of the compression ops (the fallback path on every device)."""

from __future__ import annotations

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
