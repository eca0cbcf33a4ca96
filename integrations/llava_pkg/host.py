"""Host for models of the original LLaVA codebase (``llava`` package, e.g. ``liuhaotian/llava-v1.5-7b``,
``liuhaotian/llava-v1.6-vicuna-7b``): ``LlavaLlamaForCausalLM`` / ``LlavaMistralForCausalLM`` as
``llava.model.builder.load_pretrained_model`` returns them.

Both ``forward`` and ``generate`` of those models build the multimodal sequence in one method,
``prepare_inputs_labels_for_multimodal``, which they look up on the instance. This host wraps it
(and ``encode_images``, to keep the per-view features) on the instance; ``remove()`` undoes both:

1. the stock method runs with a full attention mask, ``labels`` = the prompt ids (so that its
   output marks every visual position with ``IGNORE_INDEX``) and truncation held off;
2. the batch's images are compressed and packed together
   (:meth:`~vtcompress.integrations.host.Host.compress_and_pack`, as every image host does) and
   each image's run of visual tokens is replaced by its packing, text and caller labels kept;
3. rows are re-padded on ``config.tokenizer_padding_side`` (the side the stock code pads on),
   then truncated to ``config.tokenizer_model_max_length`` as the stock code does.

At ratio 1.0 the stock method runs untouched (outputs bit-identical) and only stats are recorded.
Nothing here imports ``llava``: the host is found by class name, so the entry point loads in an
environment without it.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import Tensor, nn

from vtcompress.api import CompressionHandle
from vtcompress.config import CLS_ATTENTION, GLOBAL_VIEW, HIDDEN_STATES, TOWER_MERGE, CompressionConfig
from vtcompress.integrations.clip_merge import tower_merge_for
from vtcompress.integrations.host import Host, score_layer_of
from vtcompress.integrations.llava_pkg import HOST
from vtcompress.integrations.llava_pkg.layout import LlavaPackageLayout
from vtcompress.pipeline import sample_stats
from vtcompress.tokens import ImageTokens, LayerQK

MODEL_CLASSES = HOST.model_classes
IMAGE_TOKEN_INDEX = -200  # llava.constants: the prompt's one placeholder id per image
IGNORE_INDEX = -100  # llava.constants: labels of visual positions and padding


class LlavaPackageHost(Host):
    model_names = "llava package LlavaLlamaForCausalLM, LlavaMistralForCausalLM"
    provides = frozenset({CLS_ATTENTION, HIDDEN_STATES, GLOBAL_VIEW, TOWER_MERGE})

    @staticmethod
    def supports(model: nn.Module) -> bool:
        cls = type(model)
        return cls.__name__ in MODEL_CLASSES and cls.__module__.split(".")[0] == "llava"

    def __init__(self, model: nn.Module, config: CompressionConfig, handle: CompressionHandle) -> None:
        mcfg = model.config
        tower = model.get_vision_tower()
        if tower is None or not getattr(tower, "is_loaded", False):
            raise ValueError(
                "the vision tower is not loaded: call model.get_vision_tower().load_model() first"
            )
        if getattr(tower, "select_feature", "patch") != "patch":
            raise ValueError("vtcompress supports mm_vision_select_feature='patch' (CLS dropped) only")
        self.anyres = getattr(mcfg, "image_aspect_ratio", None) == "anyres"
        merge_type = getattr(mcfg, "mm_patch_merge_type", "flat")
        if self.anyres and merge_type != "spatial_unpad":
            raise ValueError(
                f"vtcompress supports anyres models with mm_patch_merge_type='spatial_unpad' "
                f"(LLaVA-1.6), got {merge_type!r}"
            )
        if not self.anyres:
            # LLaVA-1.5: one view per image, so there is no global view beside crops.
            self.provides = type(self).provides - {GLOBAL_VIEW}
            self.model_names = (
                f"{type(model).__name__} with image_aspect_ratio="
                f"{getattr(mcfg, 'image_aspect_ratio', None)!r} (one view per image; for one view "
                "use e.g. fastervlm, whose [CLS] selection is GlobalCom2's thumbnail stage)"
            )
        clip = tower.vision_tower
        self.layers = clip.vision_model.encoder.layers
        num_layers = len(self.layers)
        self.view_px, self.patch_px = tower.config.image_size, tower.config.patch_size
        self.side = self.view_px // self.patch_px
        score_layer = score_layer_of(tower.select_layer, num_layers)
        super().__init__(model, config, handle, score_layer, num_layers)
        self.heads = tower.config.num_attention_heads
        self.tower = tower_merge_for(self.layers, config, score_layer, num_layers, lambda: self.capturing)
        if self.tower is not None:
            self.on_remove(self.tower.remove)
        self.capture_clip_layers(self.layers)
        self.time_vision(clip, lambda: next(model.parameters()).device)
        self.encoded: Tensor | None = None
        self.patch(model, "encode_images", self._wrap_encode(model.encode_images))
        self.patch(
            model,
            "prepare_inputs_labels_for_multimodal",
            self._wrap_prepare(model.prepare_inputs_labels_for_multimodal),
        )

    # --- encoding --------------------------------------------------------------------------------
    def _wrap_encode(self, original):
        @functools.wraps(original)
        def encode_images(images):
            features = original(images)
            if not self.capturing:
                return features
            self.encoded = features
            if self.tower is not None and self.tower.owner is not None:
                # The stock code needs side*side tokens per view: hand it each patch's token.
                owner = self.tower.owner.to(features.device)
                return features.gather(1, owner[..., None].expand(-1, -1, features.shape[-1]))
            return features

        return encode_images

    def _layouts(self, images: Any, image_sizes: Any) -> list[LlavaPackageLayout]:
        """Per encoded image, its layout (the stock code's reading of ``images``)."""
        if isinstance(images, list) or images.ndim == 5:
            views = [1 if x.ndim == 3 else x.shape[0] for x in images]
            if not self.anyres:  # 'flat': each view becomes tokens of its own, no newline
                if any(n > 1 for n in views):
                    raise ValueError(
                        "images of several views need an anyres model (image_aspect_ratio='anyres')"
                    )
                return [LlavaPackageLayout.single_view(self.side, newline=False)] * len(views)
            pinpoints = self.model.config.image_grid_pinpoints
            return [
                LlavaPackageLayout.for_image(size, pinpoints, self.view_px, self.patch_px)
                if n > 1
                else LlavaPackageLayout.single_view(self.side, newline=True)
                for n, size in zip(views, image_sizes)
            ]
        return [LlavaPackageLayout.single_view(self.side, newline=False)] * images.shape[0]

    def _image_tokens(self, index: int, layout: LlavaPackageLayout, views: slice) -> ImageTokens:
        qk = {}
        for i in self.qk_layers:
            q, k = self.captured_tensor("q", i)[views], self.captured_tensor("k", i)[views]
            qk[i] = LayerQK(
                q.view(q.shape[0], self.heads, -1),
                k.view(*k.shape[:2], self.heads, -1),
                self.layers[i].self_attn.scale,
            )
        hidden = {i: self.captured_tensor("hidden", i)[views] for i in self.hidden_layers}
        sources = self.tower.owner[views] if self.tower is not None and self.tower.owner is not None else None
        return ImageTokens(
            self.encoded[views], layout, qk, hidden, index, self.score_layer, self.num_layers, sources
        )

    def _compress_images(self, layouts: list[LlavaPackageLayout], image_sizes: Any) -> list[Tensor]:
        """Per image its packed sequence [T_i, D] (:meth:`Host.compress_and_pack`); fills stats."""
        tokens, offset = [], 0
        for idx, layout in enumerate(layouts):
            tokens.append(self._image_tokens(idx, layout, slice(offset, offset + layout.num_views)))
            offset += layout.num_views
        given = len(image_sizes) if image_sizes is not None else 0
        # The llava package's image sizes are (width, height); the stats' are (height, width).
        sizes = [
            (int(image_sizes[i][1]), int(image_sizes[i][0])) if i < given else (0, 0)
            for i in range(len(layouts))
        ]
        return self.compress_and_pack(tokens, sizes, getattr(self.model.model, "image_newline", None))

    def passes_through(self, tokens: ImageTokens) -> bool:
        # An anyres image of one view has nothing to guide a budget across views: it passes
        # through, as in the LLaVA-NeXT host, unless the tower already merged it.
        return self.anyres and not tokens.layout.has_crops and tokens.sources is None and not self.off

    # --- the sequence ----------------------------------------------------------------------------
    def _wrap_prepare(self, original):
        @functools.wraps(original)
        def prepare(
            input_ids, position_ids, attention_mask, past_key_values, labels, images, image_sizes=None
        ):
            args = (input_ids, position_ids, attention_mask, past_key_values, labels, images, image_sizes)
            if images is None or input_ids is None or input_ids.shape[1] == 1:
                return original(*args)  # text only, or a decoding step: nothing visual
            self.begin()
            try:
                if self.off:
                    out = original(*args)
                    self._record(images, image_sizes, out[2], out[4], out[2])
                    return out
                return self._prepare_compressed(original, *args)
            finally:
                self.encoded = None
                self.end()

        return prepare

    def _record(self, images, image_sizes, mask_before, embeds, mask_after) -> None:
        layouts = self._layouts(images, image_sizes)
        self._compress_images(layouts, image_sizes)
        before = self._lengths(mask_before, embeds)
        after = self._lengths(mask_after, embeds)
        self.stats.samples = sample_stats(self.model.config, before, after)

    @staticmethod
    def _lengths(mask: Tensor | None, embeds: Tensor) -> list[int]:
        return mask.sum(1).tolist() if mask is not None else [embeds.shape[1]] * embeds.shape[0]

    def _prepare_compressed(
        self, original, input_ids, position_ids, attention_mask, past_key_values, labels, images, image_sizes
    ):
        mcfg = self.model.config
        mask_in = (
            attention_mask if attention_mask is not None else torch.ones_like(input_ids, dtype=torch.bool)
        )
        max_len = getattr(mcfg, "tokenizer_model_max_length", None)
        mcfg.tokenizer_model_max_length = None  # truncate the compressed sequence, not the full one
        try:
            out = original(
                input_ids, position_ids, mask_in, past_key_values, input_ids.clone(), images, image_sizes
            )
        finally:
            mcfg.tokenizer_model_max_length = max_len
        _, _, mask_out, _, embeds, marks = out
        layouts = self._layouts(images, image_sizes)
        images_done = self._compress_images(layouts, image_sizes)
        rows_embeds, rows_labels = [], []
        image_idx = 0
        for b in range(input_ids.shape[0]):
            row_mask = mask_in[b].bool()
            ids = input_ids[b][row_mask]
            count = int((ids == IMAGE_TOKEN_INDEX).sum())
            valid = mask_out[b].bool()
            row, visual = embeds[b][valid], marks[b][valid] == IGNORE_INDEX
            text_labels = labels[b][row_mask][ids != IMAGE_TOKEN_INDEX] if labels is not None else None
            pieces, label_pieces, cursor, text_cursor = [], [], 0, 0
            vis_pos = visual.nonzero().flatten().tolist()
            used = 0
            for _ in range(count):
                seq = images_done[image_idx]
                layout = layouts[image_idx]
                image_idx += 1
                length = layout.num_tokens() + layout.num_newlines("unpadded")
                start = vis_pos[used] if used < len(vis_pos) else len(row)
                if used + length > len(vis_pos) or vis_pos[used + length - 1] != start + length - 1:
                    raise RuntimeError(
                        f"row {b}: image {image_idx - 1} does not span its {length} visual tokens"
                    )
                used += length
                pieces += [row[cursor:start], seq.to(row.dtype)]
                if text_labels is not None:
                    label_pieces += [
                        text_labels[text_cursor : text_cursor + start - cursor],
                        text_labels.new_full((seq.shape[0],), IGNORE_INDEX),
                    ]
                text_cursor += start - cursor
                cursor = start + length
            if count == 0:
                image_idx += 1  # the stock code gives a row without an image one image, unused
            pieces.append(row[cursor:])
            rows_embeds.append(torch.cat(pieces))
            if text_labels is not None:
                label_pieces.append(text_labels[text_cursor:])
                rows_labels.append(torch.cat(label_pieces))
        if max_len is not None:
            rows_embeds = [r[:max_len] for r in rows_embeds]
            rows_labels = [r[:max_len] for r in rows_labels]
        before = mask_out.sum(1).tolist()
        after = [len(r) for r in rows_embeds]
        self.stats.samples = sample_stats(mcfg, before, after)
        return self._repad(rows_embeds, rows_labels, position_ids, attention_mask, past_key_values, mask_in)

    def _repad(self, rows_embeds, rows_labels, position_ids, attention_mask, past_key_values, mask_in):
        """Pad rows on ``config.tokenizer_padding_side``, as the stock code does."""
        left = getattr(self.model.config, "tokenizer_padding_side", "right") == "left"
        batch, width = len(rows_embeds), max(len(r) for r in rows_embeds)
        first = rows_embeds[0]
        embeds = first.new_zeros(batch, width, first.shape[-1])
        mask = torch.zeros(batch, width, dtype=mask_in.dtype, device=mask_in.device)
        positions = torch.zeros(batch, width, dtype=torch.long, device=first.device)
        labels = torch.full((batch, width), IGNORE_INDEX, dtype=torch.long, device=first.device)
        for b, row in enumerate(rows_embeds):
            n = len(row)
            cols = slice(width - n, width) if left else slice(0, n)
            embeds[b, cols] = row
            mask[b, cols] = True
            positions[b, cols] = torch.arange(n, device=first.device)
            if rows_labels:
                labels[b, cols] = rows_labels[b]
        padded = any(len(r) != width for r in rows_embeds)
        return (
            None,
            positions.to(position_ids.dtype) if position_ids is not None else None,
            mask if attention_mask is not None or padded else None,
            past_key_values,
            embeds,
            labels if rows_labels else None,
        )
