"""Compression ops with a Triton path for CUDA tensors and an exact torch fallback.

Compressors call these functions; nothing else in the package writes its own version of them.
"""

from .reference import cls_attention_logits

__all__ = ["cls_attention_logits"]
