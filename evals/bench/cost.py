"""Analytic cost of LLaVA-NeXT at full depth: FLOPs of the vision side and the decoder, KV cache.

FLOPs count 2 per multiply-add, matrix products only (norms, activations, softmax and rotary
embeddings are left out: a few percent at these widths).

Vision tower (CLIP ViT, one view of T = N + 1 tokens, N = (image / patch)^2 patches, width C,
MLP width M, L layers), as LLaVA-NeXT runs it (every layer, although the features are taken
from the input of the last one):
    patch embedding   2 N (3 p^2) C
    per layer         T (2 * 4 C^2 + 2 * 2 C M)  +  2 * 2 T^2 C      (q,k,v,o; MLP; scores, mix)
Projector (LLaVA-NeXT's Linear(C, D), GELU, Linear(D, D)) on the N patch tokens of each view:
    2 N (C D + D D)
Decoder prefill: :func:`vtcompress.flops.decoder_prefill_flops` (every layer, full attention).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from vtcompress.flops import decoder_prefill_flops


def vision_tower_flops(vision_config: Any, views: int, layers: int | None = None) -> float:
    """FLOPs of the vision tower on ``views`` views (``layers``: depth, default the config's)."""
    c, m = vision_config.hidden_size, vision_config.intermediate_size
    depth = vision_config.num_hidden_layers if layers is None else layers
    p = vision_config.patch_size
    n = (vision_config.image_size // p) ** 2
    t = n + 1
    embed = 2 * n * (3 * p * p) * c
    per_layer = t * (2 * 4 * c * c + 2 * 2 * c * m) + 2 * 2 * t * t * c
    return float(views * (embed + depth * per_layer))


def projector_flops(vision_config: Any, text_config: Any, views: int) -> float:
    """FLOPs of LLaVA-NeXT's two-layer projector on the patch tokens of ``views`` views."""
    c, d = vision_config.hidden_size, text_config.hidden_size
    n = (vision_config.image_size // vision_config.patch_size) ** 2
    return float(views * 2 * n * (c * d + d * d))


def full_depth_text_config(text_config: Any, layers: int) -> SimpleNamespace:
    """The widths of ``text_config`` with ``layers`` decoder layers (for full-depth counts)."""
    heads = text_config.num_attention_heads
    return SimpleNamespace(
        hidden_size=text_config.hidden_size,
        intermediate_size=text_config.intermediate_size,
        num_attention_heads=heads,
        num_key_value_heads=getattr(text_config, "num_key_value_heads", None) or heads,
        head_dim=getattr(text_config, "head_dim", None) or text_config.hidden_size // heads,
        num_hidden_layers=layers,
    )


def decoder_flops(text_config: Any, layers: int, lengths: list[int]) -> float:
    """Prefill FLOPs of a batch of sequences of ``lengths`` tokens through ``layers`` layers."""
    cfg = full_depth_text_config(text_config, layers)
    return sum(decoder_prefill_flops(cfg, n) for n in lengths)


def kv_cache_bytes(text_config: Any, layers: int, lengths: list[int], bytes_per_value: int) -> int:
    """Bytes of the KV cache after prefill of sequences of ``lengths`` tokens (keys and values)."""
    heads = text_config.num_attention_heads
    head_dim = getattr(text_config, "head_dim", None) or text_config.hidden_size // heads
    kv_heads = getattr(text_config, "num_key_value_heads", None) or heads
    return int(2 * layers * kv_heads * head_dim * bytes_per_value * sum(lengths))


def in_lm_lengths(config: Any, layers: int, length: int, image_tokens: int) -> list[tuple[int, int]]:
    """(decoder layers, tokens they run on) per span of a method that prunes inside the language
    model (``config``: an ``LMPruningConfig``), for a prompt of ``length`` tokens holding
    ``image_tokens`` counted image tokens: layers before its first stage see every token."""
    stages = config.stages()
    bounds = [0] + [k for k, _ in stages] + [layers]
    lengths = [length] + [
        length - image_tokens + config.stage_count(i, image_tokens) for i in range(len(stages))
    ]
    return [(bounds[i + 1] - bounds[i], n) for i, n in enumerate(lengths)]


def in_lm_decoder_flops(text_config: Any, layers: int, spans: list[list[tuple[int, int]]]) -> float:
    """Prefill FLOPs of a batch through ``layers`` layers, each sequence's ``spans`` from
    :func:`in_lm_lengths`."""
    cfg = full_depth_text_config(text_config, layers)
    return sum(decoder_prefill_flops(cfg, n, layers=m) for seq in spans for m, n in seq)


def in_lm_kv_cache_bytes(text_config: Any, spans: list[list[tuple[int, int]]], bytes_per_value: int) -> int:
    """KV cache bytes after a prefill whose layers hold the lengths of ``spans``."""
    return sum(kv_cache_bytes(text_config, m, [n], bytes_per_value) for seq in spans for m, n in seq)
