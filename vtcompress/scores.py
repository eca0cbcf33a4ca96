"""Token scores derived from captured attention inputs."""

from __future__ import annotations

from torch import Tensor

from vtcompress.kernels import cls_attention_logits
from vtcompress.tokens import ImageTokens


def cls_logits(tokens: ImageTokens, layer: int) -> Tensor:
    """[V, H, 1+N] pre-softmax [CLS]-query logits of ``layer`` for every view."""
    if layer not in tokens.qk:
        raise KeyError(f"vision layer {layer} was not captured; captured: {sorted(tokens.qk)}")
    qk = tokens.qk[layer]
    return cls_attention_logits(qk.q_cls, qk.keys, qk.scale)


def cls_patch_logits(tokens: ImageTokens, layer: int) -> Tensor:
    """[V, N] head-mean pre-softmax [CLS] logits over the patch tokens (GlobalCom²'s score)."""
    return cls_logits(tokens, layer)[:, :, 1:].mean(dim=1)


def cls_patch_attention(tokens: ImageTokens, layer: int) -> Tensor:
    """[V, N] head-mean [CLS] attention probabilities over the patch tokens (softmax over all keys)."""
    return cls_logits(tokens, layer).softmax(dim=-1)[:, :, 1:].mean(dim=1)
