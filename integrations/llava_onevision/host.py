"""LLaVA-OneVision (transformers 5.x) host: removable hooks around the stock model.

What it installs (all undone by ``remove()``):
* ``pack_image_features`` on the inner ``LlavaOnevisionModel``: where per-view projected
  features exist; it stitches, unpads and shrinks the crops exactly as the stock code does, runs
  the method on the LM's own tokens (see :mod:`.layout`) and packs the kept ones with the
  newlines;
* ``get_image_features`` (signature kept: generate() selects arguments by it): turns capture on,
  and returns the features already computed for the same pixels in this call;
* ``forward`` and ``generate`` of the outer model: the prompt surgery of
  :class:`~vtcompress.integrations.placeholder_host.PlaceholderHost`.

What it provides: the base view as a global view (GlobalCom²'s thumbnail). Not provided:
[CLS] attention (SigLIP has no [CLS], and no layer of the checkpoint attends over the features
the projector gets: the tower was cut below its last layer), vision hidden states (after
anyres_max shrinking an LM token is a mix of patches, so a patch's hidden state is not a
token's) and in-tower merging (written for towers with [CLS]).

Videos (``pixel_values_videos``): ``get_video_features`` is patched too; inside a wrapped call it
returns the clips compressed by :mod:`.video` (pooled frames as a
:class:`~vtcompress.video.VideoLayout`, the one newline per video kept), and each clip's run of
video placeholders is cut to its kept length. Images and clips of one prompt each get their own
budget; a video-only method refuses a call with images.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from transformers.models.llava_onevision.modeling_llava_onevision import unpad_image

from vtcompress.api import CompressionHandle
from vtcompress.config import GLOBAL_VIEW, IN_LM, VIDEO, CompressionConfig
from vtcompress.integrations.host import score_layer_of
from vtcompress.integrations.llava_next.layout import AnyResLayout
from vtcompress.integrations.llava_onevision import HOST
from vtcompress.integrations.llava_onevision.layout import OneVisionLayout, tile_map
from vtcompress.integrations.llava_onevision.video import encode_videos
from vtcompress.integrations.lm_prune import attach_lm_pruning, newline_marker
from vtcompress.integrations.placeholder_host import CallReads, PlaceholderHost
from vtcompress.sequence import ShortenedBatch, cut_rows, placeholder_keep_mask
from vtcompress.tokens import ImageTokens

MODEL_CLASSES = HOST.model_classes


def lm_views(mcfg: Any, feats: Tensor, size: tuple[int, int], aspect: str) -> tuple[OneVisionLayout, Tensor]:
    """One image's layout and its [V, side*side, D] views (base first) for the compressor: the
    LM's own tokens (see :mod:`.layout`). Shared by this host and the vLLM one.

    mcfg: the model's ``LlavaOnevisionConfig``; feats: [1 + crops, side*side, D] projected
    features of the image's SigLIP views; size: (height, width); aspect: ``"anyres_max_<N>"``.
    """
    side = mcfg.vision_config.image_size // mcfg.vision_config.patch_size
    if feats.shape[1] != side**2:
        raise ValueError(f"expected {side**2} tokens per view, got {feats.shape[1]}")
    if feats.shape[0] == 1:  # an image of a multi-image prompt: one view
        return OneVisionLayout.single_view(side), feats
    layout = OneVisionLayout.for_image(
        size,
        mcfg.image_grid_pinpoints,
        mcfg.vision_config.image_size,
        mcfg.vision_config.patch_size,
        vision_aspect_ratio=aspect,
    )
    if layout.resampled_from is None:
        if feats.shape[0] != 1 + layout.num_crops:
            raise ValueError(
                f"image of {size} should have {1 + layout.num_crops} views, got {feats.shape[0]}"
            )
        return layout, feats
    # The stock steps (modeling_llava_onevision.pack_image_features), same ops in the same order,
    # so that keeping every token reproduces the stock features bit for bit.
    crops = feats[1:]
    base = AnyResLayout.for_image(
        size, mcfg.image_grid_pinpoints, mcfg.vision_config.image_size, mcfg.vision_config.patch_size
    )
    grid = crops.view(base.rows, base.cols, side, side, -1)
    grid = grid.permute(4, 0, 2, 1, 3).contiguous().flatten(1, 2).flatten(2, 3)
    grid = unpad_image(grid, list(size))
    if tuple(grid.shape[1:]) != layout.resampled_from:
        raise RuntimeError(f"unpadded crop map {tuple(grid.shape[1:])} != layout's {layout.resampled_from}")
    shrunk = nn.functional.interpolate(grid[None], list(layout.unpadded_shape), mode="bilinear")[0]
    return layout, torch.cat([feats[:1], tile_map(shrunk, layout)], dim=0)


class LlavaOnevisionHost(PlaceholderHost):
    model_names = "LlavaOnevisionForConditionalGeneration, LlavaOnevisionModel"
    provides = frozenset({GLOBAL_VIEW, IN_LM, VIDEO})
    media_keys = ("pixel_values", "pixel_values_videos")
    name_defaults = HOST.name_defaults
    refusal_note = "SigLIP has no [CLS]"

    @staticmethod
    def supports(model: nn.Module) -> bool:
        return type(model).__name__ in MODEL_CLASSES

    def __init__(self, model: nn.Module, config: CompressionConfig, handle: CompressionHandle) -> None:
        self.inner = model.model if type(model).__name__ == MODEL_CLASSES[0] else model
        mcfg = self.inner.config
        if mcfg.vision_feature_select_strategy != "full":
            raise ValueError(
                "vtcompress supports LLaVA-OneVision with vision_feature_select_strategy='full' "
                "(SigLIP has no [CLS] to drop; the published checkpoints use 'full')"
            )
        vision = self.inner.vision_tower
        self.side = mcfg.vision_config.image_size // mcfg.vision_config.patch_size
        num_layers = len(getattr(vision, "vision_model", vision).encoder.layers)
        layer = mcfg.vision_feature_layer if isinstance(mcfg.vision_feature_layer, int) else -1
        score_layer = score_layer_of(layer, num_layers)
        super().__init__(model, config, handle, score_layer, num_layers)
        self.image_token_id, self.text_config = mcfg.image_token_id, mcfg.text_config
        # First, so that a refused stage setting leaves the model untouched.
        attach_lm_pruning(
            self, self.inner.language_model, self.image_token_id, newline_marker(self.inner.image_newline)
        )
        self.video_token_id = mcfg.video_token_id
        self.time_vision(vision, lambda: self.inner.device)
        self.patch(self.inner, "pack_image_features", self._pack_image_features)
        self.patch_image_features(self.inner)
        self._stock_video_features = self.inner.get_video_features
        self._videos: tuple[Tensor, Any] | None = None  # (pixels, compressed features) of this call
        self.patch(self.inner, "get_video_features", self._get_video_features)
        self.patch_prompt_surgery(model)

    # --- encoding and compression ----------------------------------------------------------------
    def _views(self, feats: Tensor, size: tuple[int, int], aspect: str) -> tuple[OneVisionLayout, Tensor]:
        return lm_views(self.inner.config, feats, size, aspect)

    def _pack_image_features(self, image_features, image_sizes, image_newline=None, vision_aspect_ratio=None):
        """Replacement of LlavaOnevisionModel.pack_image_features: compress, then pack each image."""
        aspect = vision_aspect_ratio or self.inner.config.vision_aspect_ratio
        if not self.capturing:  # called from elsewhere (e.g. a user): stock behaviour
            return type(self.inner).pack_image_features(
                self.inner, image_features, image_sizes, image_newline, aspect
            )
        sizes = [tuple(size) for size in self.host_list(image_sizes)]  # no read inside a wrapped call
        images = []
        for idx, feats in enumerate(image_features):
            layout, views = self._views(feats, sizes[idx], aspect)
            images.append(
                ImageTokens(
                    views, layout, index=idx, score_layer=self.score_layer, num_layers=self.num_layers
                )
            )
        packed = self.compress_and_pack(images, sizes, image_newline)  # the whole batch in one call
        lens = torch.tensor([s.shape[0] for s in packed], dtype=torch.long, device=image_features[0].device)
        return packed, lens

    def image_note(self, tokens: ImageTokens, passthrough: bool) -> str:
        if tokens.layout.resampled_from:
            return "anyres_max shrank the crops: views are tiles of the shrunk map"
        return ""

    # --- prompt surgery --------------------------------------------------------------------------
    def encode(self, call: dict[str, Any]) -> tuple[Any, list[int]]:
        images = call.get("pixel_values") is not None
        if images and "image" not in self.config.media:
            raise ValueError(
                f"method {self.config.method!r} compresses videos only and this call has images: "
                "compress them in a call of their own with an image method (e.g. 'uniform')"
            )
        features, lengths = None, []
        if images:
            # As the stock forward: vision_aspect_ratio comes from the config (forward ignores its own).
            keys = ("vision_feature_layer", "vision_feature_select_strategy", "batch_num_images")
            extra = {k: call[k] for k in keys if call.get(k) is not None}
            features = self.inner.get_image_features(
                call["pixel_values"], call["image_sizes"], return_dict=True, **extra
            )  # fresh stats, published
            lengths = [int(f.shape[0]) for f in features.pooler_output]
        self._videos = None
        if call.get("pixel_values_videos") is not None:
            if images:
                self.capturing = True  # the images' stats go on
            else:
                self.begin()
            try:
                self._videos = (
                    call["pixel_values_videos"],
                    encode_videos(self, call, self._stock_video_features),
                )
            finally:
                self.end()
        return features, lengths

    def _get_video_features(self, pixel_values_videos, *args, **kwargs):
        """Inside a wrapped call: the clips :meth:`encode` compressed; elsewhere the stock code."""
        if self._pending is not None and self._videos is not None and self._videos[0] is pixel_values_videos:
            return self._videos[1]
        return self._stock_video_features(pixel_values_videos, *args, **kwargs)

    def cut_prompt(
        self,
        input_ids: Tensor,
        mask: Tensor | None,
        extras: dict[str, Tensor],
        pad: int,
        new_lengths: list[int],
        read: CallReads,
    ) -> ShortenedBatch:
        """Cut each image's and each clip's placeholder run to its kept length (newlines included;
        a call with videos reads their counts per row)."""
        keep = torch.ones_like(input_ids, dtype=torch.bool)
        removed = [0] * input_ids.shape[0]
        media = [(self.image_token_id, "image", read.placeholders), (self.video_token_id, "video", None)]
        for token, kind, counts in media:
            runs = [s for s in self.stats.images if s.media == kind]
            if runs:
                old = [s.tokens_before + s.newlines_before for s in runs]
                new = [s.tokens_after + s.newlines_after for s in runs]
                mine, cut = placeholder_keep_mask(input_ids, token, old, new, None, counts)
                keep &= mine
                removed = [a + b for a, b in zip(removed, cut)]
        return cut_rows(input_ids, keep, removed, mask, extras, pad, read.left, read.padding)
