"""Analytic FLOPs of a decoder's prefill, for "FLOPs saved" estimates.

Per layer and token: 2 * (d * (d_q + 2 d_kv) + d_q * d) for the attention projections,
2 * 3 * d * m for a gated MLP, plus 2 * 2 * n * d_q for the attention scores and weighted sum
(full, non-causal count). Embeddings and the LM head are left out (they do not depend on the
number of visual tokens, except the head's last-token slice).
"""

from __future__ import annotations

from typing import Any


def decoder_prefill_flops(text_config: Any, num_tokens: int, layers: int | None = None) -> float:
    """FLOPs of one prefill of ``num_tokens`` tokens through ``layers`` decoder layers (default:
    all of them). A method that drops tokens inside the model sums this over its spans of layers."""
    d = text_config.hidden_size
    heads = text_config.num_attention_heads
    head_dim = getattr(text_config, "head_dim", None) or d // heads
    kv_heads = getattr(text_config, "num_key_value_heads", None) or heads
    m = text_config.intermediate_size
    dq, dkv = heads * head_dim, kv_heads * head_dim
    n = num_tokens
    per_token = 2 * (d * (dq + 2 * dkv) + dq * d) + 2 * 3 * d * m
    attention = 2 * 2 * n * dq
    layers = text_config.num_hidden_layers if layers is None else layers
    return float(layers * n * (per_token + attention))
