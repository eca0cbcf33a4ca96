"""Compressed Qwen3-VL for vLLM: vLLM's own model and multimodal processor, plus vtcompress
(the shared parts: :mod:`vtcompress.integrations.vllm.mrope_model`).

Images only, as on the transformers host: a request with clips is served with compression off
(ratio 1.0) and refused otherwise. DeepStack: vLLM's tower returns each merged token as one row
[main | DeepStack levels]; the method sees the main part, and the DeepStack part of the kept
rows is cut with the same kept indices (for merged tokens, the mean over each token's sources,
:func:`vtcompress.integrations.qwen3_vl.host.cut_like`). Every video frame is its own
placeholder run between timestamp text; text after a run continues at its base +
max(rows, cols), the rule of transformers and of vLLM's own Qwen3-VL alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from vllm.config import VllmConfig
from vllm.model_executor.models.qwen3_vl import (
    Qwen3VLDummyInputsBuilder,
    Qwen3VLForConditionalGeneration,
    Qwen3VLMultiModalProcessor,
    Qwen3VLProcessingInfo,
)
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.processing import PromptReplacement, PromptUpdate

from vtcompress.config import CompressionConfig
from vtcompress.integrations.qwen3_vl import HOST
from vtcompress.integrations.qwen3_vl.host import cut_like
from vtcompress.integrations.vllm import mrope_positions as mp
from vtcompress.integrations.vllm.mrope_model import MRopeModelMixin, MRopeProcessorMixin
from vtcompress.integrations.vllm.mrope_settings import MRopeFamily, clip_layout
from vtcompress.tokens import ViewOutput

FAMILY = MRopeFamily(HOST.display_name, HOST.name_defaults, videos=False, default_method=HOST.default_method)


class CompressedQwen3VLProcessor(MRopeProcessorMixin, Qwen3VLMultiModalProcessor):
    """vLLM's Qwen3-VL processor with vtcompress's image placeholder counts (clips: vLLM's own)."""

    family = FAMILY

    def _get_prompt_updates(self, mm_items, hf_processor_mm_kwargs, out_mm_kwargs) -> Sequence[PromptUpdate]:
        config = self._checked_config(hf_processor_mm_kwargs, out_mm_kwargs)
        image = self.info.get_hf_config().image_token_id
        stock = super()._get_prompt_updates(mm_items, hf_processor_mm_kwargs, out_mm_kwargs)
        mine = PromptReplacement(
            modality="image",
            target=[image],
            replacement=self._image_replacement(config, out_mm_kwargs, image),
        )
        return [mine if update.modality == "image" else update for update in stock]


@MULTIMODAL_REGISTRY.register_processor(
    CompressedQwen3VLProcessor, info=Qwen3VLProcessingInfo, dummy_inputs=Qwen3VLDummyInputsBuilder
)
class CompressedQwen3VLForConditionalGeneration(MRopeModelMixin, Qwen3VLForConditionalGeneration):
    """vLLM's Qwen3-VL whose image embeddings (DeepStack levels included) are compressed."""

    family = FAMILY

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "model") -> None:
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        self._setup_compression()

    def _media_runs(self, input_tokens: list[int], feature: Any) -> list[tuple[int, int, int]]:
        """An image is one run; a clip is one run of video tokens per frame, between its
        timestamp text and vision markers."""
        if feature.modality == "image":
            return super()._media_runs(input_tokens, feature)
        _, h, w = (int(x) for x in feature.data["video_grid_thw"].data.tolist())
        advance = max(h, w) // self.merge
        start, end = feature.mm_position.offset, feature.mm_position.offset + feature.mm_position.length
        video = self.config.video_token_id
        runs, i = [], start
        while i < end:
            if input_tokens[i] == video:
                j = i
                while j < end and input_tokens[j] == video:
                    j += 1
                runs.append((i, j - i, advance))
                i = j
            else:
                i += 1
        return runs

    def _scored(self, feats: Tensor) -> Tensor:
        return feats[..., : self.visual_dim]

    def _kept_features(self, out: ViewOutput, feats: Tensor) -> Tensor:
        deepstack = cut_like(feats[:, self.visual_dim :], out)
        return torch.cat([out.features, deepstack.to(out.features.dtype)], dim=1)

    def _clip(self, index: int, feats: Tensor, grid: list[int], config: CompressionConfig, inputs) -> Tensor:
        """A clip, uncompressed (the processor refuses compression of clips): every row, each
        frame's tokens at (0, row, col) of its own run."""
        layout = clip_layout(grid, self.merge)
        rows, cols = layout.grid
        rel = mp.grid_positions(1, rows, cols).repeat(layout.frames, 1)
        return mp.with_positions(feats, rel)
