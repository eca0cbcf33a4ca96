"""LLaVA-NeXT (transformers 5.x) host: removable hooks around the stock model.

What it installs (all undone by ``remove()``):
* forward hooks on ``q_proj`` / ``k_proj`` of the vision layers a method scores with, and
  pre-hooks for hidden states it asks for (never ``output_attentions``: SDPA stays on);
* in-tower merging (``TOWER_MERGE``) through :func:`vtcompress.integrations.clip_merge.tower_merge_for`
  when the method merges inside the tower: ``ImageTokens.sources`` then says which token holds
  each original patch;
* ``pack_image_features`` on the inner ``LlavaNextModel``: where per-view projected features
  exist; it runs :meth:`~vtcompress.integrations.host.Host.compress_and_pack` (every image of the
  batch at once; kept tokens packed with newlines per the method's policy);
* ``get_image_features`` (signature kept: generate() selects arguments by it): turns capture on,
  and returns the features already computed for the same pixels in this call;
* ``forward`` and ``generate`` of the outer model: the prompt surgery of
  :class:`~vtcompress.integrations.placeholder_host.PlaceholderHost`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from vtcompress.api import CompressionHandle
from vtcompress.config import CLS_ATTENTION, GLOBAL_VIEW, HIDDEN_STATES, TOWER_MERGE, CompressionConfig
from vtcompress.integrations.clip_merge import tower_merge_for
from vtcompress.integrations.host import score_layer_of
from vtcompress.integrations.llava_next import HOST
from vtcompress.integrations.llava_next.layout import AnyResLayout
from vtcompress.integrations.placeholder_host import PlaceholderHost
from vtcompress.tokens import ImageTokens, LayerQK

MODEL_CLASSES = HOST.model_classes


class LlavaNextHost(PlaceholderHost):
    model_names = "LlavaNextForConditionalGeneration, LlavaNextModel"
    provides = frozenset({CLS_ATTENTION, HIDDEN_STATES, GLOBAL_VIEW, TOWER_MERGE})

    @staticmethod
    def supports(model: nn.Module) -> bool:
        return type(model).__name__ in MODEL_CLASSES

    def __init__(self, model: nn.Module, config: CompressionConfig, handle: CompressionHandle) -> None:
        self.inner = model.model if type(model).__name__ == MODEL_CLASSES[0] else model
        mcfg = self.inner.config
        if not isinstance(mcfg.vision_feature_layer, int):
            raise ValueError("vtcompress supports LLaVA-NeXT checkpoints with one vision_feature_layer (int)")
        if mcfg.vision_feature_select_strategy != "default":
            raise ValueError("vtcompress supports vision_feature_select_strategy='default' (CLS dropped)")
        vision = self.inner.vision_tower
        # transformers >= 5.2x flattened CLIPVisionModel; older 5.x keep a .vision_model.
        self.layers = getattr(vision, "vision_model", vision).encoder.layers
        num_layers = len(self.layers)
        self.side = mcfg.vision_config.image_size // mcfg.vision_config.patch_size
        score_layer = score_layer_of(mcfg.vision_feature_layer, num_layers)
        super().__init__(model, config, handle, score_layer, num_layers)
        self.image_token_id, self.text_config = mcfg.image_token_id, mcfg.text_config
        self.tower = tower_merge_for(self.layers, config, score_layer, num_layers, lambda: self.capturing)
        if self.tower is not None:
            self.on_remove(self.tower.remove)
        self.capture_clip_layers(self.layers)
        self.time_vision(vision, lambda: self.inner.device)
        self.patch(self.inner, "pack_image_features", self._pack_image_features)
        self.patch_image_features(self.inner)
        self.patch_prompt_surgery(model)

    # --- encoding and compression ----------------------------------------------------------------
    def _image_tokens(self, index: int, features: Tensor, layout: AnyResLayout, views: slice) -> ImageTokens:
        heads = self.inner.config.vision_config.num_attention_heads
        qk = {}
        for i in self.qk_layers:
            q, k = self.captured_tensor("q", i)[views], self.captured_tensor("k", i)[views]
            qk[i] = LayerQK(
                q.view(q.shape[0], heads, -1), k.view(*k.shape[:2], heads, -1), self.layers[i].self_attn.scale
            )
        hidden = {i: self.captured_tensor("hidden", i)[views] for i in self.hidden_layers}
        sources = self.tower.owner[views] if self.tower is not None and self.tower.owner is not None else None
        return ImageTokens(features, layout, qk, hidden, index, self.score_layer, self.num_layers, sources)

    def _pack_image_features(
        self, image_features, image_sizes, vision_feature_select_strategy, image_newline=None
    ):
        """Replacement of LlavaNextModel.pack_image_features: compress, then pack each image."""
        if not self.capturing:  # called from elsewhere (e.g. a user): stock behaviour
            return type(self.inner).pack_image_features(
                self.inner, image_features, image_sizes, vision_feature_select_strategy, image_newline
            )
        mcfg = self.inner.config
        sizes = [tuple(size) for size in self.host_list(image_sizes)]  # no read inside a wrapped call
        images, offset = [], 0
        for idx, feats in enumerate(image_features):
            if self.tower is None and feats.shape[1] != self.side * self.side:
                raise ValueError(f"expected {self.side**2} tokens per view, got {feats.shape[1]}")
            layout = AnyResLayout.for_config(mcfg, sizes[idx])
            if feats.shape[0] == 1:
                layout = AnyResLayout.single_view(self.side)
            images.append(self._image_tokens(idx, feats, layout, slice(offset, offset + feats.shape[0])))
            offset += feats.shape[0]
        packed = self.compress_and_pack(images, sizes, image_newline)
        lens = torch.tensor([s.shape[0] for s in packed], dtype=torch.long, device=image_features[0].device)
        return packed, lens

    def passes_through(self, tokens: ImageTokens) -> bool:
        # A single-view image has nothing to guide a budget across views, unless the tower
        # already merged it.
        return not tokens.layout.has_crops and tokens.sources is None and not self.off

    # --- prompt surgery --------------------------------------------------------------------------
    def encode(self, call: dict[str, Any]) -> tuple[Any, list[int]]:
        keys = ("vision_feature_layer", "vision_feature_select_strategy")
        extra = {k: call[k] for k in keys if call.get(k) is not None}
        features = self.inner.get_image_features(
            call["pixel_values"], call["image_sizes"], return_dict=True, **extra
        )
        return features, [int(f.shape[0]) for f in features.pooler_output]
