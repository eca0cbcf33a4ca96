"""Visual-token compression for the DocOwl1.5 port: ``vtcompress.compress(model, ...)`` and
``load_compressed_docowl(...)``.

Hook point: between the ViT and the H-Reducer. The H-Reducer's convolutions are 1x4 with stride
1x4, so each of its 256 outputs per view depends on one group of 4 horizontally adjacent patches
only (tested): keeping a set of groups before it is exactly keeping the same outputs after it.
Methods therefore choose, per view, among the 256 positions of the 32x8 token grid; ``vit_eos``
(the view's last token) is always kept, and every view keeps at least one token.

``ratio`` counts the 256 H-Reducer tokens of every view (``vit_eos`` excluded, like LLaVA-NeXT's
newlines): an image of V views has ``256 V`` visual tokens. The prompt's 257-long placeholder run
of each view is shortened to ``k_v + 1`` and the batch is re-padded on its own side, for ``forward``
and ``generate`` alike.

What each method sees:

Every method sees an :class:`~vtcompress.tokens.ImageTokens` with features [V, 256, H]
(H-Reducer outputs), a :class:`DocOwlLayout` (global view first, crops row-major, 32x8 tokens
each, ``patch_group`` 1x4) and the ViT's patch-level [CLS] query and keys of the layers it asks
for. Scores per token come from :mod:`vtcompress.scores`, which averages each group's keys (a
group's [CLS] logit is then exactly the mean of its patches' logits); ``tokencorr`` reads the
patch-level keys itself (its grouped mode). ``globalcom2`` needs the global view (its
thumbnail). The score layer is the ViT's last layer: DocOwl feeds the output of the last layer
to the H-Reducer. The host captures no hidden states and cannot merge inside the ViT: merging
methods run with ``metric="projected"`` and ``placement="projector"``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from vtcompress.api import CompressionHandle
from vtcompress.config import CLS_ATTENTION, GLOBAL_VIEW, CompressionConfig
from vtcompress.integrations.docowl import HOST
from vtcompress.integrations.docowl.modeling import DocOwlForConditionalGeneration, VisualBatch
from vtcompress.integrations.host import Host
from vtcompress.layout import GridLayout
from vtcompress.pipeline import sample_stats
from vtcompress.tokens import ImageTokens, LayerQK


@dataclass(frozen=True)
class DocOwlLayout(GridLayout):
    """Token geometry of one DocOwl image: the global view first (if ``global_view``), then
    ``rows x cols`` crops row-major, each a ``grid_h x grid_w`` token grid (32 x 8 for 448 px,
    14 px patches, 1x4 H-Reducer). Every token of every view exists (no padding)."""

    rows: int
    cols: int
    global_view: bool
    grid_h: int
    grid_w: int
    patch_group: tuple[int, int] = (1, 4)
    global_name: ClassVar[str] = "global"

    @property
    def view_grid(self) -> tuple[int, int]:
        return (self.grid_h, self.grid_w)


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


class DocOwlHost(Host):
    """Installs a view compressor and q/k capture hooks on a :class:`DocOwlForConditionalGeneration`."""

    model_names = "DocOwlForConditionalGeneration (mPLUG-DocOwl1.5 port)"
    provides = frozenset({CLS_ATTENTION, GLOBAL_VIEW})
    name_defaults = HOST.name_defaults

    @staticmethod
    def supports(model: nn.Module) -> bool:
        return isinstance(model, DocOwlForConditionalGeneration)

    def __init__(
        self, model: DocOwlForConditionalGeneration, config: CompressionConfig, handle: CompressionHandle
    ):
        self.layers = model.model.vision_model.encoder.layers
        super().__init__(model, config, handle, len(self.layers) - 1, len(self.layers))
        spec = model.config.vision_spec
        self.grid, self.group = spec.grid, model.model.vision2text.group
        per_view = self.grid * (self.grid // self.group)
        # Every view keeps at least one token: an image of two views must keep two. (A count that
        # depends on the content is checked per view when compressed.)
        two_views = DocOwlLayout(1, 1, True, self.grid, self.grid // self.group)
        kept = config.kept_count(two_views)
        if kept is not None and kept < two_views.num_views:
            raise ValueError(
                f"ratio {config.ratio} keeps less than one of a view's {per_view} tokens; use ratio >= 1/{per_view}"
            )
        for i in sorted(self.qk_layers):
            self.capture_output(self.layers[i].self_attn.query_key_value, "qkv", i, lambda out: out)
        vision = model.model.vision_model
        self.hook(vision.register_forward_pre_hook(lambda mod, args: self.begin()))  # before the timer's
        self.time_vision(vision, lambda: next(vision.parameters()).device)
        model.view_compressor = self
        self.on_remove(self._detach)

    def _detach(self) -> None:
        if self.model.view_compressor is self:
            self.model.view_compressor = None

    def _layer_qk(self, layer: int, views: slice) -> LayerQK:
        """Patch-level [CLS] query and keys of ``layer`` for the given views."""
        attn = self.layers[layer].self_attn
        mixed = self.captured_tensor("qkv", layer)[views]  # [V, T, 3D], per head (q, k, v)
        v, t, _ = mixed.shape
        mixed = mixed.view(v, t, attn.num_heads, 3, attn.head_dim)
        return LayerQK(q_cls=mixed[:, 0, :, 0], keys=mixed[:, :, :, 1], scale=attn.scale)

    def __call__(self, model: DocOwlForConditionalGeneration, visual: VisualBatch) -> list[Tensor]:
        """Per view, the kept H-Reducer tokens followed by ``vit_eos`` ([k_v + 1, H])."""
        out: list[Tensor] = []
        try:
            parts = split_images(visual)
            images = []
            for idx, (g, rows, cols, views) in enumerate(parts):
                layout = DocOwlLayout(rows, cols, bool(g), self.grid, self.grid // self.group)
                feats = visual.features[views]  # [V, 257, H]
                qk = {i: self._layer_qk(i, views) for i in self.qk_layers}
                images.append(
                    ImageTokens(feats[:, :-1], layout, qk, {}, idx, self.score_layer, self.num_layers)
                )
            sizes = visual.image_sizes.tolist() if visual.image_sizes is not None else [(0, 0)] * len(parts)
            self._eos = [visual.features[views, -1] for _, _, _, views in parts]  # [V, H] per image
            # every image at once; splitting the sequences needs each view's count on the host
            for seq, counts in zip(self.compress_and_pack(images, [tuple(s) for s in sizes]), self._counts):
                out.extend(seq.split(counts))
        finally:
            self._eos = self._counts = []
            self.end()
        return out

    def pack(self, results: list, passthrough: list[bool], newline: Tensor | None) -> list[Tensor]:
        """Per image, each view's kept tokens followed by its ``vit_eos``, views in order."""
        packed, self._counts = [], []
        for result, eos in zip(results, self._eos):
            parts = []
            for v, o in enumerate(result.views):
                if o.num_kept < 1:
                    raise RuntimeError(f"method {self.config.method!r} kept no token of view {v}")
                parts += [o.features, eos[v : v + 1]]
            packed.append(torch.cat(parts, dim=0))
            self._counts.append([o.num_kept + 1 for o in result.views])
        return packed

    def separators(self, layout: DocOwlLayout) -> int:
        return layout.num_views  # DocOwl has no newlines: its vit_eos tokens, one per view, always kept

    def image_note(self, tokens: ImageTokens, passthrough: bool) -> str:
        return "vit_eos (one per view, always kept) counted as newlines"

    def record_lengths(self, before: Tensor, after: Tensor) -> None:
        """Called by the model with each sample's prompt length before / after shortening."""
        if self.handle.last_stats is not None:
            self.handle.last_stats.samples = sample_stats(self.model.config, before.tolist(), after.tolist())
