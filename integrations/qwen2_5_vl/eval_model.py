"""``vtcompress_qwen2_5_vl``: Qwen2.5-VL (transformers) as an lmms-eval model (see :mod:`.model`)."""

from __future__ import annotations

from typing import Any

from vtcompress.integrations.lmms_eval.model import TransformersModel
from vtcompress.integrations.qwen2_5_vl import HOST


class CompressedQwen2_5_VL(TransformersModel):
    """``vtcompress_qwen2_5_vl``: Qwen2.5-VL (transformers) with vtcompress attached.

    ``pretrained``: a checkpoint (``Qwen/Qwen2.5-VL-7B-Instruct``...), a local folder, or ``tiny``.
    Methods: those the Qwen2.5-VL host serves (docs/hosts/qwen2-5-vl.md), e.g. ``method=tome``
    (its name gets ``metric=projected`` here). Tokens are the merged visual tokens of each image
    (``image_size`` in the records is the processor's resized size).
    """

    default_method, default_ratio = HOST.default_method, 0.25
    family = HOST  # videos: HOST.video_inputs, HOST.video_frames
    default_pretrained = "Qwen/Qwen2.5-VL-7B-Instruct"

    @staticmethod
    def loader():
        from vtcompress.integrations.qwen2_5_vl.loader import load_compressed_qwen2_5_vl

        return load_compressed_qwen2_5_vl

    def _prompt(self, context: str, num_images: int) -> str:
        from vtcompress.integrations.qwen2_5_vl.prompt import prompt

        image_token = getattr(self.processor, "image_token", "<|image_pad|>")
        templated = self._template_prompt(context, num_images, image_token)
        if templated is not None:
            return templated
        return prompt(context, 0 if image_token in context else num_images)

    def _uncompressed_images(self, inputs: dict[str, Any]) -> list[dict[str, Any]]:
        from vtcompress.integrations.lmms_eval.records import uncompressed_image_entry
        from vtcompress.integrations.qwen2_5_vl.layout import Qwen2_5_VLLayout

        merge = self._model.config.vision_config.spatial_merge_size
        px = self._model.config.vision_config.patch_size * merge
        entries = []
        for thw in inputs["image_grid_thw"].tolist():
            layout = Qwen2_5_VLLayout.from_grid_thw(thw, merge)
            size = (layout.grid[0] * px, layout.grid[1] * px)
            entries.append(
                uncompressed_image_entry(size, (layout.rows, layout.cols), layout.view_counts(), 0)
            )
        return entries
