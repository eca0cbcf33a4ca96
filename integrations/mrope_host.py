"""Hosts for transformers models with a 2x2 patch merger and 3-D rotary positions (M-RoPE).

Such a model (``model.model`` has ``visual``, ``get_image_features(pixel_values, grid_thw)``
and ``get_rope_index``; the processor returns ``image_grid_thw`` and ``mm_token_type_ids``) gets
removable patches around its stock ``forward`` and ``generate`` (the prompt surgery of
:class:`~vtcompress.integrations.placeholder_host.PlaceholderHost`) and a timer on the vision
tower. Nothing inside the tower is hooked: the methods served need only the merged tokens, so
there is no [CLS], no global view and no in-tower merging. A family adds what its model honours
to ``provides``: ``IN_LM`` (the in-language-model placement, attached to ``model.model.language_model``)
and ``VIDEO`` (it then implements :meth:`MRopeHost.encode_videos`); without ``VIDEO`` a call with
both images and videos is refused and a call with videos only runs uncompressed.

A call with images:

1. the uncompressed 3-D rotary positions come from the model's own ``get_rope_index`` (or from
   the caller's ``position_ids``);
2. ``get_image_features`` encodes the images once; its ``pooler_output`` is one
   ``(rows * cols, hidden)`` tensor per image in raster order, the order of the placeholders
   and of the positions;
3. the method compresses each image (one view, :attr:`MRopeHost.layout`; images of one grid
   together, :meth:`~vtcompress.integrations.host.Host.compress_and_pack`); kept tokens stay in
   raster order, a merged token at its first source; a family with ``VIDEO`` compresses each clip
   on its own budget;
4. each placeholder run (of images, and of clips) keeps the placeholders of the kept tokens; the positions are cut the same
   way, so every kept token keeps its uncompressed (t, h, w) position and the text after an
   image continues from the uncompressed run's maximum, as the model was trained;
5. the stock code runs on the short prompt with ``mm_encoder_outputs`` (the kept features, see
   :meth:`MRopeHost.kept_output`) and explicit ``position_ids``: ``forward`` gets the 3 M-RoPE
   rows, as it computes them itself; ``generate`` the 4 rows it would prepare (text positions of
   the short sequence first), which it then carries, +1 a step, while decoding. ``rope_deltas``
   is set for the short sequence, so a forward that continues from the cache without position
   ids goes on from there.

A family subclasses :class:`MRopeHost`, naming its model classes, its layout and itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from transformers.modeling_outputs import BaseModelOutputWithPooling

from vtcompress.api import CompressionHandle
from vtcompress.config import IN_LM, VIDEO, CompressionConfig
from vtcompress.integrations.lm_prune import attach_lm_pruning
from vtcompress.integrations.placeholder_host import CallReads, PlaceholderHost
from vtcompress.layout import GridLayout
from vtcompress.sequence import ShortenedBatch, compact_rows, cut_rows, placeholder_keep_mask
from vtcompress.tokens import ImageTokens, ViewOutput


@dataclass(frozen=True)
class MergedGridLayout(GridLayout):
    """One image of an M-RoPE host: a single ``grid`` = (rows, cols) view of merged tokens.

    The processor resizes each image to multiples of patch x merge px and the 2x2 patch merger
    turns every 2x2 block of patches into one token, so every token of the view exists (no
    letterbox), in raster order -- the order of the placeholders in the prompt and of the model's
    3-D rotary positions. ``patch_group`` is (2, 2): the patches a token merges. No global view.
    """

    grid: tuple[int, int]
    rows: ClassVar[int] = 1
    cols: ClassVar[int] = 1
    global_view: ClassVar[bool] = False
    patch_group: ClassVar[tuple[int, int]] = (2, 2)

    @classmethod
    def from_grid_thw(cls, grid_thw: tuple[int, int, int], merge: int = 2) -> MergedGridLayout:
        """Layout of one row of the processor's ``image_grid_thw`` (t, h, w in patches)."""
        t, h, w = (int(x) for x in grid_thw)
        if t != 1:
            raise ValueError(f"an image has one temporal patch, got image_grid_thw {(t, h, w)}")
        return cls((h // merge, w // merge))

    @property
    def view_grid(self) -> tuple[int, int]:
        return self.grid

    def view_names(self) -> list[str]:
        return ["image"]


# The raw media inputs the kept features and the explicit positions replace.
MEDIA_INPUTS = (
    "pixel_values",
    "image_grid_thw",
    "pixel_values_videos",
    "video_grid_thw",
    "second_per_grid_ts",
)


class MRopeHost(PlaceholderHost):
    """Base of the M-RoPE hosts (see the module docstring)."""

    family: ClassVar[str] = ""  # the family's name in messages, e.g. "Qwen2.5-VL"
    layout: ClassVar[type[MergedGridLayout]]  # the family's layout of one image
    model_classes: ClassVar[tuple[str, ...]] = ()
    # No [CLS] token, no global view, no in-tower merging, and no vision hidden state in the
    # projector's token order: methods that need one are refused.
    provides: ClassVar[frozenset[str]] = frozenset()
    # Merging compares the merged tokens themselves (the projector's output).
    name_defaults = {"pitome": {"metric": "projected"}, "tome": {"metric": "projected"}}
    # position_ids are 3-D here ([3 or 4, B, L]): finish_call cuts them, keeping their values.
    cut_keys = ("labels", "token_type_ids", "mm_token_type_ids")
    read_keys = ("image_grid_thw",)
    media_keys = ("pixel_values",)  # a family with VIDEO adds "pixel_values_videos"

    @classmethod
    def supports(cls, model: nn.Module) -> bool:
        return type(model).__name__ in cls.model_classes

    def __init__(self, model: nn.Module, config: CompressionConfig, handle: CompressionHandle) -> None:
        self.inner = model.model
        vision = self.inner.visual
        num_layers = len(vision.blocks)
        # The merger reads the last block's output: score_layer names that block.
        super().__init__(model, config, handle, num_layers - 1, num_layers)
        self.image_token_id = model.config.image_token_id
        self.video_token_id = model.config.video_token_id
        self.text_config = model.config.text_config
        if IN_LM in self.provides:  # first, so that a refused stage setting leaves the model untouched
            attach_lm_pruning(self, self.inner.language_model, self.image_token_id)
        self.merge = vision.spatial_merge_size
        self.patch_px = model.config.vision_config.patch_size
        self._kept: list[ViewOutput] = []  # per image, its kept tokens (positions ascending)
        self._video_kept: list[Tensor] = []  # per clip, the kept indices of its placeholder run
        self._encoded: dict[str, Any] | None = None  # kept features per medium, until spliced
        self.time_vision(vision, lambda: self.inner.device)
        self.patch_prompt_surgery(model)

    # --- encoding and compression ----------------------------------------------------------------
    def encode(self, call: dict[str, Any]) -> tuple[Any, list[int]]:
        """Images and videos of the call, each compressed on its own budget (images: the method
        on one view; clips: :meth:`encode_videos`)."""
        images, videos = call.get("pixel_values") is not None, call.get("pixel_values_videos") is not None
        if videos and VIDEO not in self.provides:
            raise ValueError(
                f"a compressed {self.family} compresses images; pass videos in a call without images, "
                "or remove the compression (handle.remove()) for mixed image and video prompts"
            )
        if videos and call.get("video_grid_thw") is None:
            raise ValueError(
                f"{self.family} needs video_grid_thw with pixel_values_videos: pass the processor's output"
            )
        grid_thw = call.get("image_grid_thw")
        if images and grid_thw is None:
            raise ValueError(
                f"{self.family} needs image_grid_thw with pixel_values: pass the processor's output"
            )
        if images and "image" not in self.config.media:
            raise ValueError(
                f"method {self.config.method!r} compresses videos only and this call has images: "
                "compress them in a call of their own with an image method (e.g. 'uniform')"
            )
        if call.get("mm_token_type_ids") is None and call.get("position_ids") is None:
            raise ValueError(
                f"a compressed {self.family} needs the processor's mm_token_type_ids (or 3-D position_ids) "
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
                self.compress_and_pack(tokens, sizes)
                self._encoded["image"] = self.kept_output(encoded, self._kept)
            if videos:
                self._encoded["video"], self._video_kept = self.encode_videos(call)
        finally:
            self.end()
        return self._encoded, [len(k.positions) for k in self._kept] + [len(k) for k in self._video_kept]

    def encode_videos(self, call: dict[str, Any]) -> tuple[Any, list[Tensor]]:
        """A family with ``VIDEO``: encode and compress every clip of the call; returns what the
        stock code gets as ``mm_encoder_outputs["video"]`` and, per clip, the kept indices of its
        placeholder run (long CPU, ascending)."""
        raise NotImplementedError(f"{type(self).__name__} provides VIDEO but does not encode videos")

    def kept_output(self, encoded: Any, kept: list[ViewOutput]) -> BaseModelOutputWithPooling:
        """What the stock code gets as ``mm_encoder_outputs["image"]``: the kept features of
        every image (``kept[i]``: image i's kept tokens, positions ascending). A family whose
        encoder returns more per-token outputs cuts them here too."""
        return BaseModelOutputWithPooling(pooler_output=tuple(out.features for out in kept))

    def _image_tokens(self, index: int, features: Tensor, thw: list[int]) -> ImageTokens:
        """One image ([rows * cols, D] merged tokens, raster order) as a method sees it."""
        layout = self.layout.from_grid_thw(thw, self.merge)
        if features.shape[0] != layout.num_tokens():
            raise RuntimeError(f"image {index}: {features.shape[0]} features for a {layout.grid} token grid")
        return ImageTokens(
            features[None], layout, index=index, score_layer=self.score_layer, num_layers=self.num_layers
        )

    def pack(self, results: list, passthrough: list[bool], newline: Tensor | None) -> list[Tensor]:
        """Per image its kept features [k, D] in raster order; keeps each image's kept tokens
        (positions: long CPU [k], ascending; sources reordered alike where the method merged)
        for :meth:`kept_output` and :meth:`run_keep`."""
        self._kept = []
        for result in results:
            out = result.views[0]
            positions = out.positions.detach().cpu().long()
            order = torch.argsort(positions)
            positions = positions[order]
            if positions.numel() and (positions.diff() == 0).any():
                raise RuntimeError(
                    f"method {self.config.method!r} kept a token position twice in image {result.tokens.index}"
                )
            features = out.features.index_select(0, order.to(out.features.device))
            sources = [out.sources[i] for i in order.tolist()] if out.sources is not None else None
            self._kept.append(ViewOutput(positions=positions, features=features, sources=sources))
        return [out.features for out in self._kept]

    def separators(self, layout: MergedGridLayout) -> int:
        return 0  # no newlines, no separators

    def image_note(self, tokens: ImageTokens, passthrough: bool) -> str:
        px = self.patch_px * self.merge
        height, width = tokens.layout.grid[0] * px, tokens.layout.grid[1] * px
        return f"the model saw the image resized to {width}x{height} px, one token per {px}x{px} px"

    def run_keep(self) -> list[Tensor] | None:
        return [out.positions for out in self._kept]

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
            (self.image_token_id, "image", [out.positions for out in self._kept], read.placeholders),
            (self.video_token_id, "video", self._video_kept, None),
        ]
        for token, kind, kept, counts in media:
            if kept:
                old = [s.tokens_before for s in self.stats.images if s.media == kind]
                mine, cut = placeholder_keep_mask(input_ids, token, old, [len(k) for k in kept], kept, counts)
                keep &= mine
                removed = [a + b for a, b in zip(removed, cut)]
        return cut_rows(input_ids, keep, removed, mask, extras, pad, read.left, read.padding)

    # --- positions -------------------------------------------------------------------------------
    def uncompressed_positions(self, call: dict[str, Any]) -> Tensor:
        """long [3, B, L]: the (t, h, w) rotary positions of the caller's uncompressed prompt."""
        given = call.get("position_ids")
        if given is not None:
            if given.ndim != 3 or given.shape[0] not in (3, 4):
                raise ValueError(
                    f"{self.family} with images needs 3-D position_ids of shape (3 or 4, batch, length); "
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
        new = {k: v for k, v in call.items() if k not in MEDIA_INPUTS}
        new["mm_encoder_outputs"], self._encoded = self._encoded, None
        new["position_ids"] = kept
        return new
