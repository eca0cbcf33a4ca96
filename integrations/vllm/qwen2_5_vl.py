"""Compressed Qwen2.5-VL for vLLM: vLLM's own model and multimodal processor, plus vtcompress
(the shared parts: :mod:`vtcompress.integrations.vllm.mrope_model`).

Images: the method on each image's merged-token grid. Clips: a video method on the clip, or an
image method frame by frame (:func:`vtcompress.video.compress_clip`), each clip on its own
budget, its placeholder run sized by :func:`vtcompress.video.clip_kept_count`. Kept tokens keep
their uncompressed (t, h, w), t scaled by ``tokens_per_second * second_per_grid_ts`` in float32
and truncated, as transformers computes it; text after a run continues at its base +
max(rows, cols), transformers' rule (vLLM's own Qwen2.5-VL continues at the maximum + 1, which
differs only for clips whose scaled time span exceeds that).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from vllm.config import VllmConfig
from vllm.model_executor.models.qwen2_5_vl import (
    Qwen2_5_VLDummyInputsBuilder,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLMultiModalProcessor,
    Qwen2_5_VLProcessingInfo,
)
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.processing import PromptReplacement, PromptUpdate

from vtcompress.config import CompressionConfig
from vtcompress.integrations.qwen2_5_vl import HOST
from vtcompress.integrations.vllm import mrope_positions as mp
from vtcompress.integrations.vllm.mrope_model import MRopeModelMixin, MRopeProcessorMixin
from vtcompress.integrations.vllm.mrope_settings import MRopeFamily, clip_count, clip_layout
from vtcompress.registry import get_method
from vtcompress.video import compress_clip, stack_kept

FAMILY = MRopeFamily(HOST.display_name, HOST.name_defaults, videos=True, default_method=HOST.default_method)


class CompressedQwen2_5_VLProcessor(MRopeProcessorMixin, Qwen2_5_VLMultiModalProcessor):
    """vLLM's Qwen2.5-VL processor with vtcompress's placeholder counts."""

    family = FAMILY

    def _get_prompt_updates(self, mm_items, hf_processor_mm_kwargs, out_mm_kwargs) -> Sequence[PromptUpdate]:
        config = self._checked_config(hf_processor_mm_kwargs, out_mm_kwargs)
        vocab = self.info.get_tokenizer().get_vocab()
        hf_processor = self.info.get_hf_processor()
        image, video = vocab[hf_processor.image_token], vocab[hf_processor.video_token]
        merge = self.info.get_hf_config().vision_config.spatial_merge_size

        def clip_run(item_idx: int) -> list[int]:
            grid = out_mm_kwargs["video"][item_idx]["video_grid_thw"].data
            return [video] * clip_count(config, grid.tolist(), merge)

        return [
            PromptReplacement(
                modality="image",
                target=[image],
                replacement=self._image_replacement(config, out_mm_kwargs, image),
            ),
            PromptReplacement(modality="video", target=[video], replacement=clip_run),
        ]


@MULTIMODAL_REGISTRY.register_processor(
    CompressedQwen2_5_VLProcessor, info=Qwen2_5_VLProcessingInfo, dummy_inputs=Qwen2_5_VLDummyInputsBuilder
)
class CompressedQwen2_5_VLForConditionalGeneration(MRopeModelMixin, Qwen2_5_VLForConditionalGeneration):
    """vLLM's Qwen2.5-VL whose image and video embeddings are compressed per item's config."""

    family = FAMILY

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "") -> None:
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        self._setup_compression()
        self.tokens_per_second = getattr(self.config.vision_config, "tokens_per_second", 1)

    def _clip(self, index: int, feats: Tensor, grid: list[int], config: CompressionConfig, inputs) -> Tensor:
        """One clip's kept rows [k, D + 6] in (t, row, col) order and their (t, row, col)."""
        layout = clip_layout(grid, self.merge)
        clip = self._tokens(index, feats.view(layout.frames, layout.tokens_per_frame, -1), layout)
        keep, kept = stack_kept(compress_clip(get_method(config.method), config, clip), layout)
        expected = clip_count(config, grid, self.merge)
        if kept.shape[0] != expected:
            raise RuntimeError(
                f"method {config.method!r} kept {kept.shape[0]} tokens of a clip whose run has {expected}"
            )
        seconds = inputs.get("second_per_grid_ts")
        second = (
            torch.ones(()) if seconds is None else torch.as_tensor(seconds).float().reshape(-1)[index].cpu()
        )
        rows, cols = layout.grid
        # transformers: time interval = tokens_per_second * second_per_grid_t, in float32
        rel = mp.grid_positions(layout.frames, rows, cols, self.tokens_per_second * second)
        return mp.with_positions(kept, rel[keep])
