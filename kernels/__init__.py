"""Compression ops with a Triton path for CUDA tensors and an exact, chunked torch fallback.

Compressors call these functions; nothing else in the package writes its own version of them.
Which path runs is decided per call (see :mod:`vtcompress.kernels.dispatch`); force the torch
reference with ``with force_reference(): ...``, ``set_force_reference(True)`` or
``VTCOMPRESS_FORCE_REFERENCE=1``. Triton is optional: ``pip install "vtcompress[kernels]"``.
"""

from vtcompress.kernels.dispatch import (
    FORCE_REFERENCE_ENV,
    MAX_TOPK,
    backend_for,
    cls_attention_logits,
    cosine_topk,
    energy_score,
    force_reference,
    redundancy_count,
    reference_forced,
    set_force_reference,
    triton_available,
)

__all__ = [
    "FORCE_REFERENCE_ENV",
    "MAX_TOPK",
    "backend_for",
    "cls_attention_logits",
    "cosine_topk",
    "energy_score",
    "force_reference",
    "redundancy_count",
    "reference_forced",
    "set_force_reference",
    "triton_available",
]
