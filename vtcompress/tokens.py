"""What adapters hand to compressors, and what compressors hand back.

Compressors are pure functions ``(ImageTokens, config) -> list[ViewOutput]``: they never see a
model. Adapters capture the inputs with hooks and splice the outputs back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from vtcompress.layout import Layout, view_positions


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
    sources: long [V, side*side] when the vision tower merged tokens (in-tower merging, ``TOWER_MERGE``):
        for every original patch of a view, the index (0..K-1) of the token in ``features``
        [V, K, D] that holds it. None when the tower kept every patch (K = side*side).
    """

    features: Tensor
    layout: Layout
    qk: dict[int, LayerQK] = field(default_factory=dict)
    hidden: dict[int, Tensor] = field(default_factory=dict)
    index: int = 0
    score_layer: int = -1
    num_layers: int = 0
    sources: Tensor | None = None

    @property
    def num_views(self) -> int:
        return self.features.shape[0]


@dataclass
class ViewOutput:
    """Kept (or merged) tokens of one view.

    positions: long [k] positions in the view's side x side grid; for a merged token, the
        position that stands for it (its first source patch in raster order). May live on the
        CPU while ``features`` live on the accelerator (selection methods work out positions on
        the CPU so that reading them costs no device sync).
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


def select_views(features: Tensor, positions: list[Tensor]) -> list[ViewOutput]:
    """Keep ``features[v, positions[v]]`` of every view with one gather.

    Args:
        features: [V, N, D]; positions: per view, long [k_v] CPU positions (kept as given).
    Returns:
        one ViewOutput per view; its features are rows of one [sum k_v, D] gather (one host ->
        device copy of the index, one index_select over the flattened [V*N, D] features).
    """
    v, n, d = features.shape
    flat = torch.cat([p.long() + i * n for i, p in enumerate(positions)])
    rows = features.reshape(v * n, d).index_select(0, flat.to(features.device))
    chunks = rows.split([len(p) for p in positions])
    return [ViewOutput(positions=p, features=f) for p, f in zip(positions, chunks)]


def keep_all(tokens: ImageTokens) -> list[ViewOutput]:
    """Every valid token of every view, in stock order (what ratio 1.0 means)."""
    return select_views(tokens.features, [p.clone() for p in view_positions(tokens.layout)])
