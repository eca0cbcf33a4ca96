"""Token scores derived from captured attention inputs: the one place [CLS] attention is computed.

Hosts capture q/k per vision patch. Where a token groups several patches (``layout.patch_group``,
e.g. DocOwl's 1x4 H-Reducer groups) the scores are per token: the keys of each group are
averaged, so a group's [CLS] logit is exactly the mean of its patches' logits (the logit is
linear in the key) and probabilities are a softmax over group logits.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vtcompress.kernels import cls_attention_logits
from vtcompress.tokens import ImageTokens


def group_keys(keys: Tensor, patch_grid: tuple[int, int], group: tuple[int, int]) -> Tensor:
    """[V, 1+P, H, dh] patch keys -> [V, 1+P/G, H, dh]: the [CLS] key, then each group's mean key.

    ``patch_grid`` (rows, cols) of the P patches; ``group`` (gh, gw) patches per token; groups
    in raster order of the token grid.
    """
    gh, gw = group
    if (gh, gw) == (1, 1):
        return keys
    v, _, h, dh = keys.shape
    rows, cols = patch_grid
    patches = keys[:, 1:].reshape(v, rows // gh, gh, cols // gw, gw, h, dh).mean((2, 4))
    return torch.cat([keys[:, :1], patches.reshape(v, -1, h, dh)], dim=1)


def cls_logits(tokens: ImageTokens, layer: int) -> Tensor:
    """[V, H, 1+N] pre-softmax [CLS]-query logits of ``layer`` for every view (N tokens per view)."""
    if layer not in tokens.qk:
        raise KeyError(f"vision layer {layer} was not captured; captured: {sorted(tokens.qk)}")
    qk = tokens.qk[layer]
    layout = tokens.layout
    group = tuple(layout.patch_group)
    keys = qk.keys
    if group != (1, 1):
        h, w = layout.view_grid
        keys = group_keys(keys, (h * group[0], w * group[1]), group)
    return cls_attention_logits(qk.q_cls, keys, qk.scale)


def cls_patch_logits(tokens: ImageTokens, layer: int) -> Tensor:
    """[V, N] head-mean pre-softmax [CLS] logits over the tokens (GlobalCom²'s score)."""
    return cls_logits(tokens, layer)[:, :, 1:].mean(dim=1)


def cls_patch_attention(tokens: ImageTokens, layer: int) -> Tensor:
    """[V, N] head-mean [CLS] attention probabilities over the tokens (softmax over all keys)."""
    return cls_logits(tokens, layer).softmax(dim=-1)[:, :, 1:].mean(dim=1)
