"""What adapters hand to compressors, and what compressors hand back.

Compressors are pure functions ``(ImageTokens, config) -> list[ViewOutput]``: they never see a
model. Adapters capture the inputs with hooks and splice the outputs back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .layout import AnyResLayout


@dataclass
class LayerQK:
    """Attention inputs of one vision layer for every view of an image.

    q_cls: [V, H, dh] query of the [CLS] token (token 0). keys: [V, 1+N, H, dh] keys of all
    tokens, [CLS] first. scale: the layer's softmax scale (dh ** -0.5 for CLIP).
    """

    q_cls: Tensor
    keys: Tensor
    scale: float


@dataclass
class ImageTokens:
    """One image as a compressor sees it.

    features: [V, N, D] per-view features after the projector, N = side*side, view 0 the thumbnail.
    layout: geometry of the views (crop grid, unpadded region).
    qk: vision layer index -> LayerQK, for the layers the method asked for.
    hidden: vision hidden-state index -> [V, 1+N, C] (index i = input of layer i), if asked for.
    index: position of the image in its batch (for stats).
    score_layer: the vision layer whose input is ``features`` before projection (the layer whose
        [CLS] attention scores those features); num_layers: depth of the vision tower.
    """

    features: Tensor
    layout: AnyResLayout
    qk: dict[int, LayerQK] = field(default_factory=dict)
    hidden: dict[int, Tensor] = field(default_factory=dict)
    index: int = 0
    score_layer: int = -1
    num_layers: int = 0

    @property
    def num_views(self) -> int:
        return self.features.shape[0]


@dataclass
class ViewOutput:
    """Kept (or merged) tokens of one view.

    positions: long [k] positions in the view's side x side grid; for a merged token, the
        position that stands for it (its first source patch in raster order).
    features: [k, D].
    sizes: optional long [k], how many original patches each token holds (merging methods).
    sources: optional long [k, N]-free form: list of source position tensors per token, for display.
    info: optional per-view stats a method reports (e.g. ``tokencorr``: density, tokens kept,
        which were global vs sampled); never needed for packing.
    """

    positions: Tensor
    features: Tensor
    sizes: Tensor | None = None
    sources: list[Tensor] | None = None
    info: dict[str, Any] | None = None

    @classmethod
    def select(cls, features: Tensor, index: Tensor) -> ViewOutput:
        """Keep ``features[index]`` ([N, D] features, long [k] index)."""
        return cls(positions=index, features=features.index_select(0, index))

    @property
    def num_kept(self) -> int:
        return int(self.positions.numel())


def keep_all(tokens: ImageTokens) -> list[ViewOutput]:
    """Every valid token of every view, in stock order (what ratio 1.0 means)."""
    outs = [
        ViewOutput.select(
            tokens.features[0], torch.arange(tokens.features.shape[1], device=tokens.features.device)
        )
    ]
    if tokens.layout.has_crops:
        valid = tokens.layout.crop_valid_mask(tokens.features.device)
        for v in range(1, tokens.num_views):
            outs.append(ViewOutput.select(tokens.features[v], valid[v - 1].nonzero().squeeze(1)))
    return outs
