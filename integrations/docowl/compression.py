"""Visual-token compression for the DocOwl1.5 port: ``vtcompress.compress(model, ...)`` and
``load_compressed_docowl(...)``.

Hook point: between the ViT and the H-Reducer. The H-Reducer's convolutions are 1x4 with stride
1x4, so each of its 256 outputs per view depends on one group of 4 horizontally adjacent patches
only (tested): keeping a set of groups before it is exactly keeping the same outputs after it.
Methods therefore choose, per view, among the 256 positions of the 32x8 token grid; ``vit_eos``
(the view's last token) is always kept, and every view keeps at least one token.

``ratio`` counts the 256 H-Reducer tokens of every view (``vit_eos`` excluded, like LLaVA-NeXT's
newlines): an image of V views has ``256 V`` visual tokens. The prompt's 257-long placeholder run
of each view is shortened to ``k_v + 1`` and the batch is re-padded on the left, for ``forward``
and ``generate`` alike.

What each method sees:

* ``tokencorr``: its grouped mode (:func:`vtcompress.methods.tokencorr.select_groups`) on the
  ViT's patch-level keys and [CLS] queries of the layers it asks for (32x32 patches, 1x4 groups);
  the global view stays whole unless ``compress_global``.
* every other registered method (``globalcom2``, ``random``, ``uniform``, ``fastervlm``, ...): an
  :class:`~vtcompress.tokens.ImageTokens` at group level: features [V, 256, H] (H-Reducer
  outputs), a :class:`DocOwlLayout` (global view first, crops row-major, 32x8 tokens each) and,
  per captured layer, the [CLS] query with keys averaged over each group. The [CLS] logit of a
  group is then exactly the mean of its patches' logits (the logit is linear in the key);
  softmax-based scores (``fastervlm``) are a softmax over group logits. ``globalcom2`` needs the
  global view (its thumbnail). The score layer is the ViT's last layer: DocOwl feeds the output
  of the last layer to the H-Reducer.
"""

from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from vtcompress.api import CompressionHandle, compress, register_adapter
from vtcompress.config import CompressionConfig
from vtcompress.flops import decoder_prefill_flops
from vtcompress.integrations.docowl.modeling import DocOwlForConditionalGeneration, VisualBatch
from vtcompress.registry import get_method
from vtcompress.stats import CompressionStats, ImageStats, SampleStats, ViewStats
from vtcompress.tokens import ImageTokens, LayerQK, ViewOutput

DEFAULT_MODEL = "mPLUG/DocOwl1.5-Chat"


@dataclass(frozen=True)
class DocOwlLayout:
    """Token geometry of one DocOwl image, as compressors see it.

    Views: the global view first (if ``global_view``), then ``rows x cols`` crops row-major,
    each a ``grid_h x grid_w`` token grid (32 x 8 for 448 px, 14 px patches, 1x4 H-Reducer).
    Every token of every view exists (no padding); the attribute names follow
    :class:`~vtcompress.layout.AnyResLayout` so view-wise methods work unchanged.
    """

    rows: int
    cols: int
    global_view: bool
    grid_h: int
    grid_w: int

    @property
    def view_grid(self) -> tuple[int, int]:
        return (self.grid_h, self.grid_w)

    @property
    def num_views(self) -> int:
        return int(self.global_view) + self.rows * self.cols

    @property
    def has_crops(self) -> bool:
        """True when there is more than one view (view 0 plus others)."""
        return self.num_views > 1

    @property
    def view_tokens(self) -> int:
        return self.grid_h * self.grid_w

    @property
    def valid_rows(self) -> tuple[int, int]:
        return (0, self.rows * self.grid_h)

    @property
    def valid_cols(self) -> tuple[int, int]:
        return (0, self.cols * self.grid_w)

    def crop_valid_mask(self, device: torch.device | str | None = None) -> Tensor:
        """[num_views - 1, grid_h*grid_w] bool, all True (DocOwl crops have no padding)."""
        return torch.ones(self.num_views - 1, self.view_tokens, dtype=torch.bool, device=device)

    def view_counts(self) -> list[int]:
        return [self.view_tokens] * self.num_views

    def num_tokens(self) -> int:
        return self.view_tokens * self.num_views

    def view_names(self) -> list[str]:
        crops = [f"crop {r},{c}" for r in range(self.rows) for c in range(self.cols)]
        return (["global"] if self.global_view else []) + crops


def split_images(visual: VisualBatch) -> list[tuple[int, int, int, slice]]:
    """(global, rows, cols, view slice) per image; without grids every view is its own image."""
    n_views = visual.features.shape[0]
    if visual.image_grids is None:
        return [(0, 1, 1, slice(v, v + 1)) for v in range(n_views)]
    out, start = [], 0
    for g, r, c in visual.image_grids.tolist():
        count = int(g) + int(r) * int(c)
        out.append((int(g), int(r), int(c), slice(start, start + count)))
        start += count
    if start != n_views:
        raise ValueError(f"image_grids describe {start} views but pixel_values hold {n_views}")
    return out


def group_keys(keys: Tensor, grid: int, group: int) -> Tensor:
    """[V, 1+P, H, dh] patch keys -> [V, 1+P/G, H, dh]: [CLS] key, then each 1xG group's mean key."""
    v, _, h, dh = keys.shape
    patches = keys[:, 1:].reshape(v, grid, grid // group, group, h, dh).mean(3)
    return torch.cat([keys[:, :1], patches.reshape(v, -1, h, dh)], dim=1)


@register_adapter
class DocOwlAdapter:
    """Installs a view compressor and q/k capture hooks on a :class:`DocOwlForConditionalGeneration`."""

    model_names = "DocOwlForConditionalGeneration (mPLUG-DocOwl1.5 port)"

    @staticmethod
    def supports(model: nn.Module) -> bool:
        return isinstance(model, DocOwlForConditionalGeneration)

    def __init__(
        self, model: DocOwlForConditionalGeneration, config: CompressionConfig, handle: CompressionHandle
    ):
        self.model, self.config, self.handle = model, config, handle
        self.method = get_method(config.method)
        if self.method.compress is None:
            raise ValueError(
                f"method {config.method!r} works inside the vision tower, which the DocOwl1.5 port does "
                "not support; use tokencorr, globalcom2, random, uniform or fastervlm"
            )
        spec = model.config.vision_spec
        self.grid, self.group = spec.grid, model.model.vision2text.group
        self.grid_w = self.grid // self.group
        per_view = self.grid * self.grid_w
        if config.ratio * per_view < 1:
            raise ValueError(
                f"ratio {config.ratio} keeps less than one of a view's {per_view} tokens; "
                f"use ratio >= 1/{per_view}"
            )
        self.layers = model.model.vision_model.encoder.layers
        self.num_layers = len(self.layers)
        self.score_layer = self.num_layers - 1
        self.is_tokencorr = config.method == "tokencorr"
        self.off = config.ratio >= 1.0 and not (self.is_tokencorr and not getattr(config, "is_off", True))
        self.qk_layers, _ = config.capture_layers(self.score_layer, self.num_layers)
        self.captured: dict[int, Tensor] = {}
        self.hooks: list[Any] = []
        if not self.off:
            for i in sorted(self.qk_layers):
                qkv = self.layers[i].self_attn.query_key_value
                self.hooks.append(qkv.register_forward_hook(functools.partial(self._grab, i)))
            self.hooks.append(model.model.vision_model.register_forward_pre_hook(self._vision_start))
            self.hooks.append(model.model.vision_model.register_forward_hook(self._vision_end))
            model.view_compressor = self
        self.vision_start = 0.0
        self.vision_seconds = 0.0

    def remove(self) -> None:
        for h in self.hooks:
            h.remove()
        self.hooks = []
        if self.model.view_compressor is self:
            self.model.view_compressor = None
        self.captured.clear()

    # --- capture ------------------------------------------------------------------------------
    def _grab(self, layer: int, module, args, output: Tensor) -> None:
        self.captured[layer] = output

    def _vision_start(self, module, args) -> None:
        self.vision_start = time.perf_counter()

    def _vision_end(self, module, args, output) -> None:
        self.vision_seconds = time.perf_counter() - self.vision_start

    def _layer_qk(self, layer: int, views: slice) -> LayerQK:
        """Patch-level [CLS] query and keys of ``layer`` for the given views."""
        if layer not in self.captured:
            raise RuntimeError(f"vision layer {layer} did not run, so its attention could not be captured")
        attn = self.layers[layer].self_attn
        mixed = self.captured[layer][views]  # [V, T, 3D], per head (q, k, v)
        v, t, _ = mixed.shape
        mixed = mixed.view(v, t, attn.num_heads, 3, attn.head_dim)
        return LayerQK(q_cls=mixed[:, 0, :, 0], keys=mixed[:, :, :, 1], scale=attn.scale)

    # --- compression --------------------------------------------------------------------------
    def __call__(self, model: DocOwlForConditionalGeneration, visual: VisualBatch) -> list[Tensor]:
        """Per view, the kept H-Reducer tokens followed by ``vit_eos`` ([k_v + 1, H])."""
        stats = CompressionStats(vision_seconds=self.vision_seconds)
        out: list[Tensor] = []
        try:
            for idx, (g, rows, cols, views) in enumerate(split_images(visual)):
                layout = DocOwlLayout(rows, cols, bool(g), self.grid, self.grid_w)
                feats = visual.features[views]  # [V, 257, H]
                start = time.perf_counter()
                outs = self._select(idx, layout, feats[:, :-1], views)
                for v, o in enumerate(outs):
                    if o.num_kept < 1:
                        raise RuntimeError(f"method {self.config.method!r} kept no token of view {v}")
                    out.append(torch.cat([o.features, feats[v, -1:]], dim=0))  # + vit_eos
                seconds = time.perf_counter() - start
                stats.compress_seconds += seconds
                size = tuple(visual.image_sizes[idx].tolist()) if visual.image_sizes is not None else (0, 0)
                stats.images.append(self._image_stats(idx, size, layout, outs, seconds))
        finally:
            self.captured.clear()
        self.handle.last_stats = stats
        return out

    def record_lengths(self, before: Tensor, after: Tensor) -> None:
        """Called by the model with each sample's prompt length before / after shortening."""
        if self.handle.last_stats is not None:
            self.handle.last_stats.samples = sample_stats(self.model, before, after)

    def _select(self, index: int, layout: DocOwlLayout, features: Tensor, views: slice) -> list[ViewOutput]:
        """Kept H-Reducer positions (0..255) per view of one image."""
        if self.is_tokencorr:
            from vtcompress.methods.tokencorr import select_groups

            low, deep = self.config.resolve_layers(self.num_layers)
            plans = select_groups(
                self._layer_qk(low, views),
                self._layer_qk(deep, views),
                self.config,
                grid=(self.grid, self.grid),
                group=(1, self.group),
                global_view=layout.global_view,
            )
            outs = []
            for v, plan in enumerate(plans):
                o = ViewOutput.select(features[v], plan.kept.to(features.device))
                o.info = plan.info()
                outs.append(o)
            return outs
        if self.config.method == "globalcom2" and not layout.global_view:
            raise ValueError(
                "globalcom2 on DocOwl needs the global view: keep add_global_img=True in the processor"
            )
        qk = {i: self._grouped(i, views) for i in self.qk_layers}
        tokens = ImageTokens(features, layout, qk, {}, index, self.score_layer, self.num_layers)  # type: ignore[arg-type]
        return self.method.compress(tokens, self.config)

    def _grouped(self, layer: int, views: slice) -> LayerQK:
        qk = self._layer_qk(layer, views)
        return LayerQK(qk.q_cls, group_keys(qk.keys, self.grid, self.group), qk.scale)

    def _image_stats(
        self, idx, size, layout: DocOwlLayout, outs: list[ViewOutput], seconds: float
    ) -> ImageStats:
        views = [
            ViewStats(
                name,
                layout.view_tokens,
                o.num_kept,
                [divmod(int(p), layout.grid_w) for p in o.positions.tolist()],
                info=dict(o.info or {}),
            )
            for name, o in zip(layout.view_names(), outs)
        ]
        return ImageStats(
            index=idx,
            image_size=size,
            grid=(layout.rows, layout.cols),
            method=self.config.method,
            ratio=self.config.ratio,
            tokens_before=layout.num_tokens(),
            tokens_after=sum(o.num_kept for o in outs),
            newlines_before=layout.num_views,  # DocOwl has no newlines: these count vit_eos tokens
            newlines_after=layout.num_views,
            seconds=seconds,
            views=views,
            note="vit_eos (one per view, always kept) counted as newlines",
        )


def sample_stats(model: DocOwlForConditionalGeneration, before: Tensor, after: Tensor) -> list[SampleStats]:
    """Per sample prompt lengths (real tokens) and decoder prefill FLOPs before/after."""
    cfg = model.config
    return [
        SampleStats(
            b, int(n0), int(n1), decoder_prefill_flops(cfg, int(n0)), decoder_prefill_flops(cfg, int(n1))
        )
        for b, (n0, n1) in enumerate(zip(before.tolist(), after.tolist()))
    ]


def load_compressed_docowl(
    model: str | os.PathLike = DEFAULT_MODEL,
    method: str | CompressionConfig = "tokencorr",
    ratio: float | None = 0.5,
    method_options: dict[str, Any] | None = None,
    **load_kwargs: Any,
) -> tuple[DocOwlForConditionalGeneration, Any]:
    """Load an official DocOwl1.5 checkpoint (hub id or local folder) into the port and compress it.

    Args:
        model: "mPLUG/DocOwl1.5-Chat" (default), "mPLUG/DocOwl1.5", "-Omni", "-stage1", or a folder.
        method: a name from ``vtcompress.available_methods()`` or a config instance.
        ratio: kept fraction of the 256 H-Reducer tokens per view, in (0, 1]; None keeps the
            config's own ratio.
        method_options: other options of the method's config, e.g. ``{"allocation": "exact"}``.
        **load_kwargs: for :func:`~vtcompress.integrations.docowl.load_docowl` (``dtype``, ``device``, ...).
    Returns:
        ``(model, processor)``; ``vtcompress.get_handle(model)`` is the compression handle.
    """
    from vtcompress.integrations.docowl.loading import load_docowl

    options = dict(method_options or {})
    if ratio is not None:
        options["ratio"] = ratio
    docowl, processor = load_docowl(model, **load_kwargs)
    compress(docowl, method, **options)
    return docowl, processor
