"""What the vLLM models of the M-RoPE families share (Qwen2.5-VL, Qwen3-VL): processor and model
mixins, placed before vLLM's own classes in a family's subclasses.

* :class:`MRopeProcessorMixin` resolves each request's settings
  (:mod:`vtcompress.integrations.vllm.mrope_settings`), refuses bad ones with a ValueError naming
  the field (vLLM answers 400), attaches the resolved config to every image's and clip's tensors
  and sizes an image's placeholder run by the config's declared count. vLLM hashes
  ``mm_processor_kwargs`` into an item's cache identity, so prefix and encoder caches never mix
  two settings. Precomputed embeddings are refused: no method saw their tokens' scores.
* :class:`MRopeModelMixin` compresses each item's tower output as the transformers host does
  and appends each kept token's (t, h, w) to its row; the positions themselves go through vLLM's
  pruning interface (:mod:`vtcompress.integrations.vllm.mrope_positions`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor
from transformers import BatchFeature
from vllm.multimodal.inputs import MultiModalFieldConfig

from vtcompress.config import CompressionConfig
from vtcompress.integrations.vllm import mrope_positions as mp
from vtcompress.integrations.vllm import settings
from vtcompress.integrations.vllm.mrope_settings import (
    MRopeFamily,
    check_media,
    image_count,
    image_layout,
    resolve_settings,
    server_settings,
)
from vtcompress.registry import get_method
from vtcompress.tokens import ImageTokens, ViewOutput

FIELDS = {"image": "vtcompress_image_config", "video": "vtcompress_video_config"}
WHERE = f"mm_processor_kwargs.{settings.KEY}"


def tower_depth(hf_config: Any) -> int:
    return int(hf_config.vision_config.depth)


class MRopeProcessorMixin:
    """Settings, config fields and image counts of a vLLM multimodal processor."""

    family: MRopeFamily

    def _config(self, hf_kwargs: Mapping[str, object]) -> CompressionConfig:
        hf_config = self.info.get_hf_config()
        server = server_settings(self.family, hf_config)
        request = hf_kwargs.get(settings.KEY)
        return resolve_settings(self.family, server, request, tower_depth(hf_config), where=WHERE)

    def _apply_hf_processor_main(self, mm_items, hf_kwargs: Mapping[str, object]) -> BatchFeature:
        config = self._config(hf_kwargs)  # raises before any work on a bad request
        hf_kwargs = {k: v for k, v in hf_kwargs.items() if k != settings.KEY}
        processed = super()._apply_hf_processor_main(mm_items, hf_kwargs)
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

    def _checked_config(
        self, hf_processor_mm_kwargs: Mapping[str, object], out_mm_kwargs
    ) -> CompressionConfig:
        """The request's config, after refusing precomputed embeddings and media it cannot compress."""
        config = self._config(hf_processor_mm_kwargs)
        for modality in FIELDS:
            for item in out_mm_kwargs.get(modality, []):
                if f"{modality}_embeds" in item:
                    raise ValueError(
                        f"precomputed {modality}_embeds are refused by vtcompress's "
                        f"{self.family.display_name}: send the {modality} itself (a method must see "
                        "the vision tower's tokens)"
                    )
        counts = {m: len(out_mm_kwargs.get(m, [])) for m in FIELDS}
        check_media(config, self.family, counts["image"], counts["video"], WHERE)
        return config

    def _image_replacement(self, config: CompressionConfig, out_mm_kwargs, token: int) -> Callable:
        merge = self.info.get_hf_config().vision_config.spatial_merge_size

        def replacement(item_idx: int) -> list[int]:
            grid = out_mm_kwargs["image"][item_idx]["image_grid_thw"].data
            return [token] * image_count(config, grid.tolist(), merge)

        return replacement


class MRopeModelMixin:
    """Compression of a vLLM M-RoPE model's media and the positions of the kept tokens.

    A family implements :meth:`_clip` (one clip's rows) and may override :meth:`_media_runs`
    (where the placeholder runs are) and :meth:`_kept_features` (per-token side outputs).
    """

    family: MRopeFamily
    recomputes_mrope_positions = True  # read by mrope_positions.patch_runners

    def _setup_compression(self) -> None:
        """Call at the end of ``__init__``."""
        if self.multimodal_config.is_multimodal_pruning_enabled():
            raise ValueError(
                "vtcompress's model replaces vLLM's video pruning: drop --video-pruning-rate and set "
                'the method in the vtcompress settings, e.g. {"method": "evs", "ratio": 0.25}'
            )
        self.is_multimodal_pruning_enabled = False  # vLLM's own pruning stays off; vtcompress prunes
        # Fail at start-up, not on the first request, when the server's own settings are bad.
        resolve_settings(
            self.family, server_settings(self.family, self.config), None, tower_depth(self.config)
        )
        self.merge = self.config.vision_config.spatial_merge_size

    # --- positions ------------------------------------------------------------------------------
    def _media_runs(self, input_tokens: list[int], feature: Any) -> list[tuple[int, int, int]]:
        """(offset, placeholders, advance) of each placeholder run of one media item: one run,
        text after it at base + max(rows, cols) (transformers' rule)."""
        grid = feature.data[f"{feature.modality}_grid_thw"].data.tolist()
        advance = max(int(grid[1]), int(grid[2])) // self.merge
        return [(feature.mm_position.offset, feature.mm_position.length, advance)]

    def get_mrope_input_positions(self, input_tokens: list[int], mm_features: list) -> tuple[Tensor, int]:
        runs = [run for feature in mm_features for run in self._media_runs(input_tokens, feature)]
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
        out: list[Tensor] = []
        for modality, inputs in self._parse_and_validate_multimodal_inputs(**kwargs).items():
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
                out += [
                    self._clip(i, f, g, c, inputs) for i, (f, g, c) in enumerate(zip(feats, grids, configs))
                ]
        return out

    def _tokens(self, index: int, feats: Tensor, layout: Any) -> ImageTokens:
        depth = tower_depth(self.config)  # the merger reads the last block: score layer depth - 1
        return ImageTokens(feats, layout, index=index, score_layer=depth - 1, num_layers=depth)

    def _image(self, index: int, feats: Tensor, grid: list[int], config: CompressionConfig) -> Tensor:
        """One image's kept rows [k, D + 6]: kept tokens in raster order and their (0, row, col)."""
        layout = image_layout(grid, self.merge)
        rows, cols = layout.grid
        if config.is_off:
            kept, keep = feats, torch.arange(rows * cols)
        else:
            out = get_method(config.method).compress(
                self._tokens(index, self._scored(feats)[None], layout), config
            )
            out = sorted_output(out[0])
            keep, kept = out.positions, self._kept_features(out, feats)
        expected = image_count(config, grid, self.merge)
        if kept.shape[0] != expected:
            raise RuntimeError(
                f"method {config.method!r} kept {kept.shape[0]} tokens of an image whose run has {expected}"
            )
        return mp.with_positions(kept, mp.grid_positions(1, rows, cols)[keep])

    def _scored(self, feats: Tensor) -> Tensor:
        """The part of a tower row the method sees (the merged token; a family with side outputs
        in the same row drops them)."""
        return feats

    def _kept_features(self, out: ViewOutput, feats: Tensor) -> Tensor:
        """The kept tokens' rows [k, D'] in ``out``'s order (positions ascending)."""
        return out.features

    def _clip(self, index: int, feats: Tensor, grid: list[int], config: CompressionConfig, inputs) -> Tensor:
        raise NotImplementedError


def sorted_output(out: ViewOutput) -> ViewOutput:
    """``out`` with its tokens in position order (features and merge sources alike), as the
    transformers host orders them (:meth:`vtcompress.integrations.mrope_host.MRopeHost.pack`)."""
    positions = out.positions.detach().cpu().long()
    order = torch.argsort(positions)
    positions = positions[order]
    if positions.numel() and (positions.diff() == 0).any():
        raise RuntimeError("a method kept a token position twice")
    features = out.features.index_select(0, order.to(out.features.device))
    sources = [out.sources[i] for i in order.tolist()] if out.sources is not None else None
    return ViewOutput(positions=positions, features=features, sources=sources)
