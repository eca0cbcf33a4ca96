"""Qwen2.5-VL (transformers 5.x) host: removable patches around the stock model.

How a call is encoded, compressed and cut, and how kept tokens keep their 3-D rotary positions,
is :class:`~vtcompress.integrations.mrope_host.MRopeHost`. The tower's ``pooler_output`` is in
raster order (the merger's output after the tower's window order is undone), the order of the
placeholders and of the positions (docs/hosts/qwen2-5-vl.md).

Its language model (a Qwen2 decoder) hosts the in-LM placement (``IN_LM``). Videos
(``pixel_values_videos``, ``video_grid_thw``, ``second_per_grid_ts``) take the images' route:
each clip is one :class:`~vtcompress.video.VideoLayout` of temporal patches, compressed by a
video method or by an image method frame by frame (:mod:`.video`); its run of video placeholders
is cut like an image's, and images and clips of one prompt each get their own budget. A
video-only method refuses a call with images.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor
from transformers.modeling_outputs import BaseModelOutputWithPooling

from vtcompress.config import IN_LM, VIDEO
from vtcompress.integrations.mrope_host import MRopeHost
from vtcompress.integrations.qwen2_5_vl import HOST
from vtcompress.integrations.qwen2_5_vl.layout import Qwen2_5_VLLayout
from vtcompress.integrations.qwen2_5_vl.video import encode_videos

MODEL_CLASSES = HOST.model_classes


class Qwen2_5_VLHost(MRopeHost):
    family = HOST.display_name
    model_names = "Qwen2_5_VLForConditionalGeneration"
    model_classes = MODEL_CLASSES
    layout = Qwen2_5_VLLayout
    provides = frozenset({IN_LM, VIDEO})
    name_defaults = HOST.name_defaults
    media_keys = ("pixel_values", "pixel_values_videos")
    refusal_note = f"{HOST.display_name} has no [CLS] token and no thumbnail (docs/{HOST.docs_page})"

    def encode_videos(self, call: dict[str, Any]) -> tuple[BaseModelOutputWithPooling, list[Tensor]]:
        return encode_videos(self, self.inner, call, self.merge, self.patch_px)
