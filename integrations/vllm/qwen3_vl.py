"""Compressed Qwen3-VL for vLLM: vLLM's own model and multimodal processor, plus vtcompress
(the shared parts: :mod:`vtcompress.integrations.vllm.mrope_model`).

Images: the method on each image's merged-token grid. Clips, as on the transformers host
(:mod:`vtcompress.integrations.qwen3_vl.video`): a video method on the clip of temporal patches,
or an image method frame by frame, each clip on its own budget. DeepStack: vLLM's tower returns
each merged token as one row [main | DeepStack levels]; the method sees the main part, and the
DeepStack part of the kept rows is cut with the same kept indices (for merged tokens, the mean
over each token's sources, :func:`vtcompress.integrations.qwen3_vl.host.cut_like`).

Every video frame is its own placeholder run after its timestamp text, between
``<|vision_start|>`` and ``<|vision_end|>``: the timestamps and markers stay, and each run is
sized before the model runs by the method's declared per-frame count
(:func:`vtcompress.video.clip_frame_counts`; a frame that keeps nothing keeps its timestamp and
an empty marker pair). A method that splits a clip over its frames by content (EVS, VidCom²) has
no such count and is refused for clips. (vLLM's own EVS / VidCom² pruning of Qwen3-VL keeps the
clip's total and instead makes the whole clip, timestamps included, one embedding run that the
model fills once it knows the split; vtcompress does not take that path.) Kept tokens keep their
uncompressed (0, row, col) within their frame's run; text after a run continues at its base +
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
from vtcompress.integrations.mrope_video import KeptClip
from vtcompress.integrations.qwen3_vl import HOST
from vtcompress.integrations.qwen3_vl.host import cut_like
from vtcompress.integrations.qwen3_vl.video import cut_clip
from vtcompress.integrations.vllm import mrope_positions as mp
from vtcompress.integrations.vllm.mrope_model import MRopeModelMixin, MRopeProcessorMixin
from vtcompress.integrations.vllm.mrope_settings import MRopeFamily, clip_layout, frame_counts
from vtcompress.registry import get_method
from vtcompress.tokens import ViewOutput
from vtcompress.video import compress_clip, stack_kept

FAMILY = MRopeFamily(
    HOST.display_name, HOST.name_defaults, videos=True, default_method=HOST.default_method, frame_runs=True
)


class CompressedQwen3VLProcessor(MRopeProcessorMixin, Qwen3VLMultiModalProcessor):
    """vLLM's Qwen3-VL processor with vtcompress's placeholder counts (per image; per frame of a
    clip, the timestamps and markers as vLLM writes them)."""

    family = FAMILY

    def _get_prompt_updates(self, mm_items, hf_processor_mm_kwargs, out_mm_kwargs) -> Sequence[PromptUpdate]:
        config = self._checked_config(hf_processor_mm_kwargs, out_mm_kwargs)
        hf_config = self.info.get_hf_config()
        tokenizer = self.info.get_tokenizer()
        merge = hf_config.vision_config.spatial_merge_size

        def clip_runs(item_idx: int):
            item = out_mm_kwargs["video"][item_idx]
            return Qwen3VLMultiModalProcessor.get_video_repl(
                tokens_per_frame=frame_counts(config, item["video_grid_thw"].data.tolist(), merge),
                timestamps=item["timestamps"].data,
                tokenizer=tokenizer,
                vision_start_token_id=hf_config.vision_start_token_id,
                vision_end_token_id=hf_config.vision_end_token_id,
                video_token_id=hf_config.video_token_id,
                select_token_id=True,
            )

        updates = []
        for update in super()._get_prompt_updates(mm_items, hf_processor_mm_kwargs, out_mm_kwargs):
            if update.modality == "image":
                image = hf_config.image_token_id
                replacement = self._image_replacement(config, out_mm_kwargs, image)
            else:
                replacement = clip_runs
            updates.append(
                PromptReplacement(modality=update.modality, target=update.target, replacement=replacement)
            )
        return updates


@MULTIMODAL_REGISTRY.register_processor(
    CompressedQwen3VLProcessor, info=Qwen3VLProcessingInfo, dummy_inputs=Qwen3VLDummyInputsBuilder
)
class CompressedQwen3VLForConditionalGeneration(MRopeModelMixin, Qwen3VLForConditionalGeneration):
    """vLLM's Qwen3-VL whose image and video embeddings (DeepStack levels included) are compressed."""

    family = FAMILY

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "model") -> None:
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        self._setup_compression()

    def _media_runs(self, input_tokens: list[int], feature: Any) -> list[tuple[int, int, int]]:
        """An image is one run; a clip is one run of video tokens per frame, after each of its
        ``<|vision_start|>`` markers (an empty run for a frame that keeps nothing)."""
        if feature.modality == "image":
            return super()._media_runs(input_tokens, feature)
        _, h, w = (int(x) for x in feature.data["video_grid_thw"].data.tolist())
        advance = max(h, w) // self.merge
        start, end = feature.mm_position.offset, feature.mm_position.offset + feature.mm_position.length
        begin, video = self.config.vision_start_token_id, self.config.video_token_id
        runs = []
        for i in range(start, end):
            if input_tokens[i] == begin:
                j = i + 1
                while j < end and input_tokens[j] == video:
                    j += 1
                runs.append((i + 1, j - i - 1, advance))
        return runs

    def _scored(self, feats: Tensor) -> Tensor:
        return feats[..., : self.visual_dim]

    def _kept_features(self, out: ViewOutput, feats: Tensor) -> Tensor:
        deepstack = cut_like(feats[:, self.visual_dim :], out)
        return torch.cat([out.features, deepstack.to(out.features.dtype)], dim=1)

    def _clip(self, index: int, feats: Tensor, grid: list[int], config: CompressionConfig, inputs) -> Tensor:
        """One clip's kept rows [k, D + 6] in (t, row, col) order, DeepStack levels cut alike,
        and each kept token's (0, row, col) in its frame's run."""
        layout = clip_layout(grid, self.merge)
        main = self._scored(feats).view(layout.frames, layout.tokens_per_frame, -1)
        outs = compress_clip(get_method(config.method), config, self._tokens(index, main, layout))
        expected = frame_counts(config, grid, self.merge)
        if [out.num_kept for out in outs] != expected:
            raise RuntimeError(
                f"method {config.method!r} kept {[out.num_kept for out in outs]} tokens of a clip's "
                f"frames whose runs have {expected}"
            )
        keep, kept = stack_kept(outs, layout)
        deepstack = cut_clip(feats[:, self.visual_dim :], KeptClip(layout, outs, keep, kept), cut_like)
        rows, cols = layout.grid
        rel = mp.grid_positions(1, rows, cols).repeat(layout.frames, 1)[keep]
        return mp.with_positions(torch.cat([kept, deepstack.to(kept.dtype)], dim=1), rel)
