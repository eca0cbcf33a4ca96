"""``vtcompress_qwen2_5_vl``: Qwen2.5-VL (transformers) as an lmms-eval model (see :mod:`.model`)."""

from __future__ import annotations

from typing import Any

from vtcompress.integrations.lmms_eval.model import TransformersModel


class CompressedQwen2_5_VL(TransformersModel):
    """``vtcompress_qwen2_5_vl``: Qwen2.5-VL (transformers) with vtcompress attached.

    ``pretrained``: a checkpoint (``Qwen/Qwen2.5-VL-7B-Instruct``...), a local folder, or ``tiny``.
    Methods: those the Qwen2.5-VL host serves (docs/hosts/qwen2-5-vl.md), e.g.
    ``method=tome,metric=projected``. Tokens are the merged visual tokens of each image
    (``image_size`` in the records is the processor's resized size).
    """

    default_method, default_ratio = "uniform", 0.25
    default_pretrained = "Qwen/Qwen2.5-VL-7B-Instruct"

    @staticmethod
    def loader():
        from vtcompress.integrations.qwen2_5_vl.loader import load_compressed_qwen2_5_vl

        return load_compressed_qwen2_5_vl

    def _prompt(self, context: str, num_images: int) -> str:
        from vtcompress.integrations.qwen2_5_vl.tiny import prompt

        image_token = getattr(self.processor, "image_token", "<|image_pad|>")
        parts = [] if image_token in context else [{"type": "image"}] * num_images
        parts.append({"type": "text", "text": context})
        template = self.chat_template or getattr(self.processor, "chat_template", None)
        if template:
            return self.processor.apply_chat_template(
                [{"role": "user", "content": parts}],
                chat_template=template,
                add_generation_prompt=True,
                tokenize=False,
            )
        return prompt(context, len(parts) - 1)

    def _inputs(self, prompts: list[str], images: list) -> dict[str, Any]:
        inputs = self.processor(images=images or None, text=prompts, padding=True, return_tensors="pt").to(
            self._device
        )
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self._model.dtype)
        return inputs

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
