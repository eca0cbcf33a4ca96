"""Compressed LLaVA-OneVision for vLLM, images and videos: vLLM's own model and processor, plus vtcompress.

* The processor (``CompressedOnevisionProcessor``) resolves each request's settings
  (:mod:`vtcompress.integrations.vllm.onevision_settings`), refuses bad ones with a ValueError
  naming the field (HTTP 400 from ``vllm serve``), sizes each image's and each clip's placeholder
  run by the config's static count, and attaches the resolved config to every item's tensors.
  vLLM hashes ``mm_processor_kwargs`` into an item's cache identity, so prefix and encoder caches
  never mix two settings.
* The model (``CompressedOnevisionForConditionalGeneration``) runs vLLM's tower, projector and
  video pooling unchanged, then compresses what the transformers host compresses: an image's LM
  tokens (stitched, unpadded, shrunk by anyres_max_9:
  :func:`~vtcompress.integrations.llava_onevision.host.lm_views`), packed with its newlines; a
  clip's pooled frames as a :class:`~vtcompress.video.VideoLayout`, the video's one newline kept
  last. An item whose config is off (ratio 1.0) goes through vLLM's own code, untouched.
  Precomputed image embeddings (``image_embeds``) are used as given, at their own length.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor
from transformers import BatchFeature
from vllm.config import VllmConfig
from vllm.model_executor.models.llava_onevision import (
    LlavaOnevisionDummyInputsBuilder,
    LlavaOnevisionForConditionalGeneration,
    LlavaOnevisionImagePixelInputs,
    LlavaOnevisionMultiModalProcessor,
    LlavaOnevisionProcessingInfo,
)
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.inputs import MultiModalFieldConfig
from vllm.multimodal.parse import (
    ImageEmbeddingItems,
    ImageProcessorItems,
    VideoEmbeddingItems,
    VideoProcessorItems,
)
from vllm.multimodal.processing import PromptReplacement, PromptUpdate

from vtcompress.config import CompressionConfig
from vtcompress.integrations.llava_next.layout import AnyResLayout
from vtcompress.integrations.llava_onevision.host import lm_views
from vtcompress.integrations.vllm import onevision_settings as ov
from vtcompress.integrations.vllm import settings
from vtcompress.packing import pack_images
from vtcompress.pipeline import compress_images
from vtcompress.registry import get_method
from vtcompress.tokens import ImageTokens
from vtcompress.video import compress_clip, stack_kept

IMAGE_FIELD = "vtcompress_config"
VIDEO_FIELD = "vtcompress_video_config"
WHERE = f"mm_processor_kwargs.{settings.KEY}"


class CompressedOnevisionProcessingInfo(LlavaOnevisionProcessingInfo):
    def get_mm_max_tokens_per_item(self, seq_len: int, mm_counts: Mapping[str, int]) -> Mapping[str, int]:
        """The uncompressed maxima: a request may ask for a larger ratio than the server's."""
        return {"image": self.get_max_image_tokens(), "video": self.get_max_video_tokens(seq_len, mm_counts)}


class CompressedOnevisionProcessor(LlavaOnevisionMultiModalProcessor):
    """vLLM's OneVision processor with vtcompress's placeholder counts for images and clips."""

    def _geometry(self) -> ov.OneVisionGeometry:
        return ov.OneVisionGeometry.from_hf_config(self.info.get_hf_config())

    def _config(self, hf_kwargs: Mapping[str, object]) -> CompressionConfig:
        server = settings.server_settings(self.info.get_hf_config())
        return ov.resolve(server, hf_kwargs.get(settings.KEY), self._geometry(), where=WHERE)

    def get_dummy_inputs(self, seq_len: int, mm_counts: Mapping[str, int], mm_options: Mapping[str, object]):
        """The profiling run at ratio 1.0 (the memory it measures is the most a request can ask
        for), with the server's method: a server-wide video method must not refuse dummy images."""
        inputs = super().get_dummy_inputs(seq_len, mm_counts, mm_options)
        return dataclasses.replace(inputs, hf_processor_mm_kwargs={settings.KEY: {"ratio": 1.0}})

    def _apply_hf_processor_main(self, mm_items, hf_kwargs: Mapping[str, object]) -> BatchFeature:
        config = self._config(hf_kwargs)  # raises before any work on a bad request
        counts = mm_items.get_all_counts()
        ov.check_media(config, counts.get("image", 0), WHERE)
        stock_kwargs = {k: v for k, v in hf_kwargs.items() if k != settings.KEY}
        processed = super()._apply_hf_processor_main(mm_items, stock_kwargs)
        encoded = settings.encode(config)
        for field, modality in ((IMAGE_FIELD, "image"), (VIDEO_FIELD, "video")):
            if counts.get(modality, 0):
                processed[field] = [encoded] * counts[modality]
        return processed

    def _get_mm_fields_config(
        self, hf_inputs: BatchFeature, hf_processor_mm_kwargs: Mapping[str, object]
    ) -> Mapping[str, MultiModalFieldConfig]:
        fields = dict(super()._get_mm_fields_config(hf_inputs, hf_processor_mm_kwargs))
        fields[IMAGE_FIELD] = MultiModalFieldConfig.batched("image", keep_on_cpu=True)
        fields[VIDEO_FIELD] = MultiModalFieldConfig.batched("video", keep_on_cpu=True)
        return fields

    def _get_prompt_updates(self, mm_items, hf_processor_mm_kwargs, out_mm_kwargs) -> Sequence[PromptUpdate]:
        stock = super()._get_prompt_updates(mm_items, hf_processor_mm_kwargs, out_mm_kwargs)
        config = self._config(hf_processor_mm_kwargs)
        if config.is_off:
            return stock
        geometry = self._geometry()
        hf_config = self.info.get_hf_config()
        image_token, video_token = hf_config.image_token_index, hf_config.video_token_index

        def image_run(item_idx: int) -> list[int]:
            images = mm_items.get_items("image", (ImageEmbeddingItems, ImageProcessorItems))
            if isinstance(images, ImageEmbeddingItems):  # precomputed embeddings: their own length
                return [image_token] * images.get_feature_size(item_idx)
            size = images.get_image_size(item_idx)
            layout = geometry.image_layout(size.height, size.width)
            return [image_token] * ov.image_placeholder_count(config, layout)

        def video_run(item_idx: int) -> list[int]:
            videos = mm_items.get_items("video", (VideoEmbeddingItems, VideoProcessorItems))
            if isinstance(videos, VideoEmbeddingItems):
                return [video_token] * videos.get_feature_size(item_idx)
            layout = geometry.clip_layout(videos.get_num_frames(item_idx))
            return [video_token] * ov.clip_placeholder_count(config, layout)

        return [
            PromptReplacement(modality="image", target=[image_token], replacement=image_run),
            PromptReplacement(modality="video", target=[video_token], replacement=video_run),
        ]


def _decode_all(encoded) -> list[CompressionConfig]:
    """Per-item configs from a batched field (a stacked tensor when all have one length, else a list)."""
    return [] if encoded is None else [settings.decode(t) for t in encoded]


@MULTIMODAL_REGISTRY.register_processor(
    CompressedOnevisionProcessor,
    info=CompressedOnevisionProcessingInfo,
    dummy_inputs=LlavaOnevisionDummyInputsBuilder,
)
class CompressedOnevisionForConditionalGeneration(LlavaOnevisionForConditionalGeneration):
    """vLLM's LLaVA-OneVision whose image and video embeddings are compressed per item's config."""

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "") -> None:
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        self.geometry = ov.OneVisionGeometry.from_hf_config(self.config)
        # Fail at start-up, not on the first request, when the server's own settings are bad.
        ov.resolve(settings.server_settings(self.config), None, self.geometry)

    def embed_multimodal(self, **kwargs: object):
        image_configs = _decode_all(kwargs.pop(IMAGE_FIELD, None))
        video_configs = _decode_all(kwargs.pop(VIDEO_FIELD, None))
        by_modality = self._parse_and_validate_multimodal_inputs(**kwargs)
        out: tuple[Tensor, ...] = ()
        for modality, inputs in by_modality.items():  # in the order vLLM expects them back
            if modality == "image":
                out += tuple(self._images(inputs, image_configs))
            else:
                frames = [len(v) for v in inputs["pixel_values_videos"]]
                out += tuple(self._videos(inputs, frames, video_configs))
        return out

    # --- images ---------------------------------------------------------------------------------
    def _images(self, image_input, configs: list[CompressionConfig]) -> list[Tensor]:
        if not isinstance(image_input, LlavaOnevisionImagePixelInputs) or all(c.is_off for c in configs):
            return list(self._process_image_input(image_input))
        patch_embeddings = self._process_image_pixels(image_input)
        image_sizes = image_input["image_sizes"]
        out = []
        for i, (feats, config) in enumerate(zip(patch_embeddings, configs)):
            if config.is_off:
                out.append(
                    self._merge_image_patch_embeddings(
                        image_sizes[i], feats, image_newline=self.image_newline, strategy="spatial_unpad"
                    )
                )
            else:
                height, width = (int(x) for x in image_sizes[i].tolist())
                out.append(self._compress_image(i, feats, config, height, width))
        return out

    def _compress_image(self, index: int, feats: Tensor, config: CompressionConfig, height: int, width: int):
        """One image's packed sequence [T, D] from its per-view features [V', 729, D] (V' >= V:
        vLLM may pad an image's views for batching)."""
        g = self.geometry
        crops = AnyResLayout.for_image((height, width), list(g.pinpoints), g.view_px, g.patch_px).num_crops
        layout, views = lm_views(self.config, feats[: 1 + crops], (height, width), ov.ASPECT)
        tokens = ImageTokens(views, layout, index=index, score_layer=g.score_layer, num_layers=g.num_layers)
        [result] = compress_images(get_method(config.method), config, [tokens])
        [seq] = pack_images([result], self.image_newline, config.newline_policy)
        expected = ov.image_placeholder_count(config, layout)
        if seq.shape[0] != expected:
            raise RuntimeError(
                f"method {config.method!r} produced {seq.shape[0]} tokens for a {height}x{width} image; "
                f"its placeholder run has {expected}"
            )
        return seq

    # --- videos ---------------------------------------------------------------------------------
    def _videos(self, video_input, frames: list[int], configs: list[CompressionConfig]) -> list[Tensor]:
        stock = self._process_video_pixels(video_input)
        # [B, F*P+1, D] for equal clips, else per clip [1, F*P+1, D]: one [F*P+1, D] each.
        clips = [e[0] if e.dim() == 3 else e for e in stock]
        return [
            clip if config.is_off else self._compress_clip(i, clip, n, config)
            for i, (clip, n, config) in enumerate(zip(clips, frames, configs))
        ]

    def _compress_clip(self, index: int, embeds: Tensor, frames: int, config: CompressionConfig) -> Tensor:
        """One clip's sequence: kept pooled tokens (frame-major, raster) then the video's newline.

        embeds: [frames * P + 1, D], the stock video embeddings (newline last)."""
        g = self.geometry
        layout = g.clip_layout(frames)
        clip = ImageTokens(
            embeds[:-1].view(frames, layout.tokens_per_frame, -1),
            layout,
            index=index,
            score_layer=g.score_layer,
            num_layers=g.num_layers,
        )
        outs = compress_clip(get_method(config.method), config, clip)
        _, kept = stack_kept(outs, layout)
        seq = torch.cat([kept, embeds[-1:]])
        expected = ov.clip_placeholder_count(config, layout)
        if seq.shape[0] != expected:
            raise RuntimeError(
                f"method {config.method!r} produced {seq.shape[0]} tokens for a clip of {frames} frames; "
                f"its placeholder run has {expected}"
            )
        return seq
