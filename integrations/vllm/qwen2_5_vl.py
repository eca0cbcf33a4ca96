"""Compressed Qwen2.5-VL for vLLM: vLLM's own model and multimodal processor, plus vtcompress.

* The processor (:class:`CompressedQwen2_5_VLProcessor`) resolves each request's settings
  (:mod:`vtcompress.integrations.vllm.mrope_settings`), refuses bad ones with a ValueError naming
  the field (vLLM answers 400), sizes each image's and clip's placeholder run by the config's
  declared count and attaches the resolved config to the item's tensors. vLLM hashes
  ``mm_processor_kwargs`` into an item's cache identity, so prefix and encoder caches never mix
  two settings. Precomputed embeddings are refused (their tokens were never seen by a method).
* The model (:class:`CompressedQwen2_5_VLForConditionalGeneration`) runs vLLM's vision tower,
  compresses each image (the method on its merged-token grid) and each clip
  (:func:`vtcompress.video.compress_clip`) as the transformers host does, and appends each kept
  token's (t, h, w) to its row; ``recompute_mrope_positions`` turns them into the positions
  (:mod:`vtcompress.integrations.vllm.mrope_positions`). Kept tokens keep their uncompressed
  positions and text continues as after the uncompressed media, by transformers' rule
  (base + max(rows, cols)).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from transformers import BatchFeature
from vllm.config import VllmConfig
from vllm.model_executor.models.qwen2_5_vl import (
    Qwen2_5_VLDummyInputsBuilder,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLMultiModalProcessor,
    Qwen2_5_VLProcessingInfo,
)
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.inputs import MultiModalFieldConfig
from vllm.multimodal.processing import PromptReplacement, PromptUpdate

from vtcompress.config import CompressionConfig
from vtcompress.integrations.qwen2_5_vl import HOST
from vtcompress.integrations.vllm import mrope_positions as mp
from vtcompress.integrations.vllm import settings
from vtcompress.integrations.vllm.mrope_settings import (
    MRopeFamily,
    check_media,
    clip_count,
    clip_layout,
    image_count,
    image_layout,
    resolve_settings,
)
from vtcompress.registry import get_method
from vtcompress.tokens import ImageTokens
from vtcompress.video import compress_clip, stack_kept

FAMILY = MRopeFamily(HOST.display_name, HOST.name_defaults, videos=True)
FIELDS = {"image": "vtcompress_image_config", "video": "vtcompress_video_config"}
WHERE = f"mm_processor_kwargs.{settings.KEY}"


def _depth(hf_config: Any) -> int:
    return int(hf_config.vision_config.depth)


class CompressedQwen2_5_VLProcessor(Qwen2_5_VLMultiModalProcessor):
    """vLLM's Qwen2.5-VL processor with vtcompress's placeholder counts."""

    family = FAMILY

    def _config(self, hf_kwargs: Mapping[str, object]) -> CompressionConfig:
        hf_config = self.info.get_hf_config()
        server = settings.server_settings(hf_config)
        return resolve_settings(
            self.family, server, hf_kwargs.get(settings.KEY), _depth(hf_config), where=WHERE
        )

    def _call_hf_processor(
        self, hf_data: Mapping[str, object], hf_kwargs: Mapping[str, object]
    ) -> BatchFeature:
        config = self._config(hf_kwargs)  # raises before any work on a bad request
        hf_kwargs = {k: v for k, v in hf_kwargs.items() if k != settings.KEY}
        processed = super()._call_hf_processor(hf_data, hf_kwargs)
        for modality, field in FIELDS.items():
            grids = processed.get(f"{modality}_grid_thw")
            if grids is not None:
                processed[field] = [settings.encode(config) for _ in range(len(grids))]
        return processed

    def _get_mm_fields_config(
        self, hf_inputs: BatchFeature, hf_processor_mm_kwargs: Mapping[str, object]
    ) -> Mapping[str, MultiModalFieldConfig]:
        fields = dict(super()._get_mm_fields_config(hf_inputs, hf_processor_mm_kwargs))
        for modality, field in FIELDS.items():
            fields[field] = MultiModalFieldConfig.batched(modality, keep_on_cpu=True)
        return fields

    def _get_prompt_updates(self, mm_items, hf_processor_mm_kwargs, out_mm_kwargs) -> Sequence[PromptUpdate]:
        config = self._config(hf_processor_mm_kwargs)
        counts = {m: len(out_mm_kwargs.get(m, [])) for m in FIELDS}
        for modality in FIELDS:
            for item in out_mm_kwargs.get(modality, []):
                if f"{modality}_embeds" in item:
                    raise ValueError(
                        f"precomputed {modality}_embeds are refused by vtcompress's {self.family.display_name}: "
                        f"send the {modality} itself (a method must see the vision tower's tokens)"
                    )
        check_media(config, self.family, counts["image"], counts["video"], WHERE)
        vocab = self.info.get_tokenizer().get_vocab()
        hf_processor = self.info.get_hf_processor()
        tokens = {"image": vocab[hf_processor.image_token], "video": vocab[hf_processor.video_token]}
        merge = self.info.get_hf_config().vision_config.spatial_merge_size
        count = {"image": image_count, "video": clip_count}

        def replacement(item_idx: int, modality: str) -> list[int]:
            grid = out_mm_kwargs[modality][item_idx][f"{modality}_grid_thw"].data
            return [tokens[modality]] * count[modality](config, grid.tolist(), merge)

        return [
            PromptReplacement(
                modality=modality,
                target=[tokens[modality]],
                replacement=lambda i, m=modality: replacement(i, m),
            )
            for modality in FIELDS
        ]


@MULTIMODAL_REGISTRY.register_processor(
    CompressedQwen2_5_VLProcessor, info=Qwen2_5_VLProcessingInfo, dummy_inputs=Qwen2_5_VLDummyInputsBuilder
)
class CompressedQwen2_5_VLForConditionalGeneration(Qwen2_5_VLForConditionalGeneration):
    """vLLM's Qwen2.5-VL whose image and video embeddings are compressed per item's config."""

    family = FAMILY
    recomputes_mrope_positions = True  # read by mrope_positions.patch_runners

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "") -> None:
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        if self.multimodal_config.is_multimodal_pruning_enabled():
            raise ValueError(
                "vtcompress's model replaces vLLM's video pruning: drop --video-pruning-rate and set "
                'the method in the vtcompress settings, e.g. {"method": "evs", "ratio": 0.25}'
            )
        self.is_multimodal_pruning_enabled = False  # vLLM's own EVS stays off; vtcompress prunes
        # Fail at start-up, not on the first request, when the server's own settings are bad.
        resolve_settings(self.family, settings.server_settings(self.config), None, _depth(self.config))
        self.merge = self.config.vision_config.spatial_merge_size
        self.tokens_per_second = getattr(self.config.vision_config, "tokens_per_second", 1)

    # --- positions ------------------------------------------------------------------------------
    def get_mrope_input_positions(self, input_tokens: list[int], mm_features: list) -> tuple[Tensor, int]:
        runs = []
        for feature in mm_features:
            grid = feature.data[f"{feature.modality}_grid_thw"].data.tolist()
            _, h, w = (int(x) // m for x, m in zip(grid, (1, self.merge, self.merge)))
            runs.append((feature.mm_position.offset, feature.mm_position.length, max(h, w)))
        return mp.initial_positions(len(input_tokens), runs)

    def recompute_mrope_positions(
        self, input_ids, multimodal_embeddings, mrope_positions, num_computed_tokens
    ):
        media = (self.config.image_token_id, self.config.video_token_id)
        return mp.recompute_positions(
            input_ids, multimodal_embeddings, mrope_positions, num_computed_tokens, media
        )

    # --- embeddings -----------------------------------------------------------------------------
    def embed_multimodal(self, **kwargs: object):
        encoded = {m: kwargs.pop(f, None) for m, f in FIELDS.items()}
        by_modality = self._parse_and_validate_multimodal_inputs(**kwargs)
        out: list[Tensor] = []
        for modality, inputs in by_modality.items():
            if inputs is None:
                continue
            if inputs["type"] not in ("pixel_values", "pixel_values_videos"):
                raise ValueError(f"precomputed {modality} embeddings are refused by vtcompress")
            configs = [settings.decode(t) for t in encoded[modality]]
            if modality == "image":
                feats = self._process_image_input(inputs)
                grids = inputs["image_grid_thw"].tolist()
                out += [self._image(i, f, g, c) for i, (f, g, c) in enumerate(zip(feats, grids, configs))]
            else:
                feats = self._process_video_input(inputs)
                grids = inputs["video_grid_thw"].tolist()
                seconds = inputs.get("second_per_grid_ts")
                ones = torch.ones(len(grids))
                steps = (ones if seconds is None else torch.as_tensor(seconds).float().reshape(-1)).cpu()
                out += [
                    self._clip(i, f, g, c, s)
                    for i, (f, g, c, s) in enumerate(zip(feats, grids, configs, steps))
                ]
        return out

    def _image(self, index: int, feats: Tensor, grid: list[int], config: CompressionConfig) -> Tensor:
        """One image's kept rows [k, D + 6] (kept tokens in raster order, their (0, row, col))."""
        layout = image_layout(grid, self.merge)
        rows, cols = layout.grid
        if config.is_off:
            kept, keep = feats, torch.arange(rows * cols)
        else:
            tokens = ImageTokens(
                feats[None],
                layout,
                index=index,
                score_layer=_depth(self.config) - 1,
                num_layers=_depth(self.config),
            )
            out = get_method(config.method).compress(tokens, config)[0]
            keep = out.positions.detach().cpu().long()
            order = torch.argsort(keep)
            keep, kept = keep[order], self._kept_features(out, order, feats)
        expected = image_count(config, grid, self.merge)
        if kept.shape[0] != expected:
            raise RuntimeError(
                f"method {config.method!r} kept {kept.shape[0]} tokens of an image; its run has {expected}"
            )
        return mp.with_positions(kept, mp.grid_positions(1, rows, cols)[keep])

    def _kept_features(self, out, order: Tensor, feats: Tensor) -> Tensor:
        """The kept tokens' features in position order (a family with per-token side outputs
        cuts them here too)."""
        return out.features.index_select(0, order.to(out.features.device))

    def _clip(
        self, index: int, feats: Tensor, grid: list[int], config: CompressionConfig, seconds: Tensor
    ) -> Tensor:
        """One clip's kept rows [k, D + 6] ((t, row, col) order, t scaled as the model does)."""
        layout = clip_layout(grid, self.merge)
        clip = ImageTokens(
            feats.view(layout.frames, layout.tokens_per_frame, -1),
            layout,
            index=index,
            score_layer=_depth(self.config) - 1,
            num_layers=_depth(self.config),
        )
        keep, kept = stack_kept(compress_clip(get_method(config.method), config, clip), layout)
        expected = clip_count(config, grid, self.merge)
        if kept.shape[0] != expected:
            raise RuntimeError(
                f"method {config.method!r} kept {kept.shape[0]} tokens of a clip; its run has {expected}"
            )
        rows, cols = layout.grid
        # transformers: time interval = tokens_per_second * second_per_grid_t, in float32
        rel = mp.grid_positions(layout.frames, rows, cols, self.tokens_per_second * seconds)
        return mp.with_positions(kept, rel[keep])
