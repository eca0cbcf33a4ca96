"""Compression ops with a Triton path for CUDA tensors and an exact torch fallback.

Compressors call these functions; nothing else in the package writes its own version of them.
"""

from .reference import cls_attention_logits, cosine_topk, energy_score, redundancy_count

__all__ = ["cls_attention_logits", "cosine_topk", "energy_score", "redundancy_count"]
