"""Qwen3-VL (transformers 5.x) host: :class:`~vtcompress.integrations.mrope_host.MRopeHost`
(kept tokens keep their 3-D rotary positions) plus DeepStack.

DeepStack: the vision tower also returns ``deepstack_features``, one ``(tokens, text_hidden)``
tensor per image for each layer in ``vision_config.deepstack_visual_indexes`` (each from its own
merger, in the same raster order as ``pooler_output``); the decoder adds the i-th of them to the
hidden states at the visual positions after decoder layer i. The stock model finds those
positions (``visual_pos_masks``) from the image placeholders of the prompt it runs, so once the
prompt's runs are cut to the kept tokens, every DeepStack tensor must be cut to the same tokens
in the same order (:meth:`Qwen3VLHost.kept_output`); a cut that forgets them fails on the
shapes, one that cuts them differently adds features to the wrong tokens.

A merged token (pitome, tome) stands for several patches: its DeepStack features are the mean of
its source patches' features, as its main features are their (size-weighted) mean.

Videos (``VIDEO``): each clip is one :class:`~vtcompress.video.VideoLayout` of temporal patches,
compressed by a video method or by an image method frame by frame, its DeepStack features cut
with the same kept indices (:mod:`.video`: the timestamps between a clip's frame runs stay).
Images and clips of one prompt each get their own budget; the stock model joins their DeepStack
features in placeholder order. A video-only method refuses a call with images.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from transformers.models.qwen3_vl.modeling_qwen3_vl import BaseModelOutputWithDeepstackFeatures

from vtcompress.config import VIDEO
from vtcompress.integrations.mrope_host import MRopeHost
from vtcompress.integrations.qwen3_vl import HOST
from vtcompress.integrations.qwen3_vl.layout import Qwen3VLLayout
from vtcompress.integrations.qwen3_vl.video import encode_videos
from vtcompress.tokens import ViewOutput

MODEL_CLASSES = HOST.model_classes


def cut_like(features: Tensor, kept: ViewOutput) -> Tensor:
    """Per-token features of one image ([N, D], raster order) cut to the kept tokens ([k, D], in
    ``kept``'s order): the rows at ``kept.positions``, or, for merged tokens (``kept.sources``),
    the mean of each token's source rows."""
    if kept.sources is None:
        return features.index_select(0, kept.positions.to(features.device))
    counts = torch.tensor([len(s) for s in kept.sources], device=features.device)
    rows = torch.cat([s.long() for s in kept.sources]).to(features.device)
    owner = torch.repeat_interleave(torch.arange(len(kept.sources), device=features.device), counts)
    total = torch.zeros(len(kept.sources), features.shape[1], dtype=torch.float32, device=features.device)
    total.index_add_(0, owner, features.index_select(0, rows).float())
    return (total / counts[:, None]).to(features.dtype)


class Qwen3VLHost(MRopeHost):
    family = HOST.display_name
    model_names = "Qwen3VLForConditionalGeneration"
    model_classes = MODEL_CLASSES
    layout = Qwen3VLLayout
    # Not IN_LM: DeepStack adds features at the visual positions after the first decoder layers,
    # positions the stock model fixes before a stage could drop tokens.
    provides = frozenset({VIDEO})
    media_keys = ("pixel_values", "pixel_values_videos")
    read_keys = ("image_grid_thw", "video_grid_thw")
    name_defaults = HOST.name_defaults
    refusal_note = (
        f"{HOST.display_name} has no [CLS] token and no thumbnail, and its DeepStack layers keep "
        f"the in-language-model methods out (docs/{HOST.docs_page})"
    )

    def encode_videos(
        self, call: dict[str, Any]
    ) -> tuple[BaseModelOutputWithDeepstackFeatures, list[Tensor]]:
        return encode_videos(self, self.inner, call, self.merge, self.patch_px, cut_like)

    def kept_output(self, encoded: Any, kept: list[ViewOutput]) -> BaseModelOutputWithDeepstackFeatures:
        """The kept main features and, cut the same way, every layer's DeepStack features."""
        deepstack = [
            tuple(cut_like(features, out) for features, out in zip(layer, kept))
            for layer in encoded.deepstack_features
        ]
        return BaseModelOutputWithDeepstackFeatures(
            pooler_output=tuple(out.features for out in kept), deepstack_features=deepstack
        )
