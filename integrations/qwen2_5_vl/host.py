"""Qwen2.5-VL (transformers 5.x) host: removable patches around the stock model.

What it installs (all undone by ``remove()``): ``forward`` and ``generate`` of the outer
``Qwen2_5_VLForConditionalGeneration`` (the prompt surgery of
:class:`~vtcompress.integrations.placeholder_host.PlaceholderHost`) and a timer on the vision
tower. Nothing inside the tower is hooked: the methods this host serves need only the merged
tokens (see ``provides`` and docs/hosts/qwen2-5-vl.md).

Videos (``pixel_values_videos``, ``video_grid_thw``, ``second_per_grid_ts``) take the same
route: each clip is one :class:`~vtcompress.video.VideoLayout` of temporal patches, compressed by
a video method or by an image method frame by frame (:mod:`.video`); its run of video
placeholders is cut like an image's, and images and clips of one prompt each get their own budget.
A video-only method refuses a call with images.

A call with images:

1. the uncompressed 3-D rotary positions come from the model's own ``get_rope_index`` (or from
   the caller's ``position_ids``);
2. ``get_image_features`` encodes the images once; its ``pooler_output`` is one
   ``(rows * cols, hidden)`` tensor per image in raster order (the merger's output after the
   tower's window order is undone), the order of the placeholders and of the positions;
3. the method compresses each image (one view, :class:`Qwen2_5_VLLayout`); kept tokens stay in
   raster order, a merged token at its first source;
4. each placeholder run keeps the placeholders of the kept tokens; the positions are cut the same
   way, so every kept token keeps its uncompressed (t, h, w) position and the text after an
   image continues from the uncompressed run's maximum, as the model was trained;
5. the stock code runs on the short prompt with ``mm_encoder_outputs`` (the kept features) and
   explicit ``position_ids``: ``forward`` gets the 3 M-RoPE rows, as it computes them itself;
   ``generate`` the 4 rows it would prepare (text positions of the short sequence first), which
   it then carries, +1 a step, while decoding. ``rope_deltas`` is set for the short sequence,
   so a forward that continues from the cache without position ids goes on from there.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from transformers.modeling_outputs import BaseModelOutputWithPooling

from vtcompress.api import CompressionHandle
from vtcompress.config import VIDEO, CompressionConfig
from vtcompress.integrations.placeholder_host import CallReads, PlaceholderHost
from vtcompress.integrations.qwen2_5_vl import HOST
from vtcompress.integrations.qwen2_5_vl.layout import Qwen2_5_VLLayout
from vtcompress.integrations.qwen2_5_vl.video import check_video_call, drop_video_inputs, encode_videos
from vtcompress.sequence import ShortenedBatch, compact_rows, cut_rows, placeholder_keep_mask
from vtcompress.tokens import ImageTokens

MODEL_CLASSES = HOST.model_classes


class Qwen2_5_VLHost(PlaceholderHost):
    model_names = "Qwen2_5_VLForConditionalGeneration"
    # No [CLS] token, no global view, no in-tower merging (windowed attention), and no vision
    # hidden state in the projector's token order: methods that need one are refused.
    provides: frozenset[str] = frozenset({VIDEO})
    # Merging compares the merged tokens themselves (the projector's output).
    name_defaults = HOST.name_defaults
    # position_ids are 3-D here ([3 or 4, B, L]): finish_call cuts them, keeping their values.
    cut_keys = ("labels", "token_type_ids", "mm_token_type_ids")
    read_keys = ("image_grid_thw",)
    media_keys = ("pixel_values", "pixel_values_videos")
    refusal_note = "Qwen2.5-VL has no [CLS] token and no thumbnail (docs/hosts/qwen2-5-vl.md)"

    @staticmethod
    def supports(model: nn.Module) -> bool:
        return type(model).__name__ in MODEL_CLASSES

    def __init__(self, model: nn.Module, config: CompressionConfig, handle: CompressionHandle) -> None:
        self.inner = model.model
        vision = self.inner.visual
        num_layers = len(vision.blocks)
        # The merger reads the last block's output: score_layer names that block.
        super().__init__(model, config, handle, num_layers - 1, num_layers)
        self.image_token_id = model.config.image_token_id
        self.video_token_id = model.config.video_token_id
        self.text_config = model.config.text_config
        self.merge = vision.spatial_merge_size
        self.patch_px = model.config.vision_config.patch_size
        self._kept: list[Tensor] = []  # per image, the kept raster positions
        self._video_kept: list[Tensor] = []  # per clip, the kept indices of its placeholder run
        self._encoded: dict[str, BaseModelOutputWithPooling] | None = None  # kept features, until spliced
        self.time_vision(vision, lambda: self.inner.device)
        self.patch_prompt_surgery(model)

    # --- encoding and compression ----------------------------------------------------------------
    def encode(self, call: dict[str, Any]) -> tuple[Any, list[int]]:
        """Images and videos of the call, each compressed on its own budget (images: the method
        on one view; clips: :func:`vtcompress.video.compress_clip`)."""
        images, videos = call.get("pixel_values") is not None, call.get("pixel_values_videos") is not None
        grid_thw = call.get("image_grid_thw")
        if images and grid_thw is None:
            raise ValueError("Qwen2.5-VL needs image_grid_thw with pixel_values: pass the processor's output")
        if images and "image" not in self.config.media:
            raise ValueError(
                f"method {self.config.method!r} compresses videos only and this call has images: "
                "compress them in a call of their own with an image method (e.g. 'uniform')"
            )
        if videos:
            check_video_call(call)
        if call.get("mm_token_type_ids") is None and call.get("position_ids") is None:
            raise ValueError(
                "a compressed Qwen2.5-VL needs the processor's mm_token_type_ids (or 3-D position_ids) "
                "to keep each kept token's rotary position"
            )
        self.begin()
        self._encoded, self._kept, self._video_kept = {}, [], []
        try:
            if images:
                encoded = self.inner.get_image_features(call["pixel_values"], grid_thw, return_dict=True)
                grids = self.host_list(grid_thw)  # no read inside a wrapped call
                tokens = [
                    self._image_tokens(index, features, thw)
                    for index, (features, thw) in enumerate(zip(encoded.pooler_output, grids))
                ]
                px = self.patch_px * self.merge
                sizes = [(t.layout.grid[0] * px, t.layout.grid[1] * px) for t in tokens]
                # Images of one grid go through the method together (its batched path, where it has one).
                kept_features = self.compress_and_pack(tokens, sizes)
                self._encoded["image"] = BaseModelOutputWithPooling(pooler_output=tuple(kept_features))
            if videos:
                self._encoded["video"], self._video_kept = encode_videos(
                    self, self.inner, call, self.merge, self.patch_px
                )
        finally:
            self.end()
        return self._encoded, [len(p) for p in self._kept + self._video_kept]

    def _image_tokens(self, index: int, features: Tensor, thw: list[int]) -> ImageTokens:
        """One image ([rows * cols, D] merged tokens, raster order) as a method sees it."""
        layout = Qwen2_5_VLLayout.from_grid_thw(thw, self.merge)
        if features.shape[0] != layout.num_tokens():
            raise RuntimeError(f"image {index}: {features.shape[0]} features for a {layout.grid} token grid")
        return ImageTokens(
            features[None], layout, index=index, score_layer=self.score_layer, num_layers=self.num_layers
        )

    def pack(self, results: list, passthrough: list[bool], newline: Tensor | None) -> list[Tensor]:
        """Per image its kept features [k, D] in raster order; :meth:`run_keep` gets their raster
        positions (long CPU [k], ascending)."""
        self._kept, packed = [], []
        for result in results:
            out = result.views[0]
            positions = out.positions.detach().cpu().long()
            order = torch.argsort(positions)
            positions = positions[order]
            if positions.numel() and (positions.diff() == 0).any():
                raise RuntimeError(
                    f"method {self.config.method!r} kept a token position twice in image {result.tokens.index}"
                )
            self._kept.append(positions)
            packed.append(out.features.index_select(0, order.to(out.features.device)))
        return packed

    def separators(self, layout: Qwen2_5_VLLayout) -> int:
        return 0  # no newlines, no separators

    def image_note(self, tokens: ImageTokens, passthrough: bool) -> str:
        px = self.patch_px * self.merge
        height, width = tokens.layout.grid[0] * px, tokens.layout.grid[1] * px
        return f"the model saw the image resized to {width}x{height} px, one token per {px}x{px} px"

    def run_keep(self) -> list[Tensor] | None:
        return self._kept

    def cut_prompt(
        self,
        input_ids: Tensor,
        mask: Tensor | None,
        extras: dict[str, Tensor],
        pad: int,
        new_lengths: list[int],
        read: CallReads,
    ) -> ShortenedBatch:
        """Cut each image's run of image placeholders and each clip's run of video placeholders
        to the placeholders of its kept tokens (a call with videos reads their counts per row)."""
        keep = torch.ones_like(input_ids, dtype=torch.bool)
        removed = [0] * input_ids.shape[0]
        media = [
            (self.image_token_id, "image", self._kept, read.placeholders),
            (self.video_token_id, "video", self._video_kept, None),
        ]
        for token, kind, kept, counts in media:
            if kept:
                old = [s.tokens_before for s in self.stats.images if s.media == kind]
                mine, cut = placeholder_keep_mask(input_ids, token, old, [len(k) for k in kept], kept, counts)
                keep &= mine
                removed = [a + b for a, b in zip(removed, cut)]
        return cut_rows(input_ids, keep, removed, mask, extras, pad, read.left)

    # --- positions -------------------------------------------------------------------------------
    def uncompressed_positions(self, call: dict[str, Any]) -> Tensor:
        """long [3, B, L]: the (t, h, w) rotary positions of the caller's uncompressed prompt."""
        given = call.get("position_ids")
        if given is not None:
            if given.ndim != 3 or given.shape[0] not in (3, 4):
                raise ValueError(
                    "Qwen2.5-VL with images needs 3-D position_ids of shape (3 or 4, batch, length); "
                    "omit position_ids and vtcompress computes them with the model's get_rope_index"
                )
            return given[-3:]
        positions, _ = self.inner.get_rope_index(
            call["input_ids"],
            call["mm_token_type_ids"],
            image_grid_thw=call.get("image_grid_thw"),
            video_grid_thw=call.get("video_grid_thw"),
            second_per_grid_ts=call.get("second_per_grid_ts"),
            attention_mask=call.get("attention_mask"),
        )
        return positions

    def finish_call(
        self, call: dict[str, Any], original: dict[str, Any], cut: ShortenedBatch, generating: bool
    ) -> dict[str, Any]:
        positions = self.uncompressed_positions(original)
        kept = compact_rows(
            positions.permute(1, 2, 0), cut.keep.to(positions.device), cut.left_padded, 0, cut.lengths
        )
        kept = kept.permute(2, 0, 1)  # [3, B, L']
        mask = cut.attention_mask.to(kept.device).bool()
        lengths = mask.sum(1, keepdim=True)
        top = kept.masked_fill(~mask[None], -1).amax(dim=(0, 2)).unsqueeze(1)
        self.inner.rope_deltas = top + 1 - lengths  # what get_rope_index returns for this sequence
        if generating:  # generate's own layout: text positions of the sequence, then M-RoPE
            text = (mask.long().cumsum(-1) - 1).masked_fill(~mask, 0)
            kept = torch.cat([text[None].to(kept.dtype), kept], dim=0)
        new = {
            k: v for k, v in drop_video_inputs(call).items() if k not in ("pixel_values", "image_grid_thw")
        }
        new["mm_encoder_outputs"], self._encoded = self._encoded, None
        new["position_ids"] = kept
        return new
