"""``vtcompress_llava_next``: LLaVA-NeXT (transformers) as an lmms-eval model (see :mod:`.model`)."""

from __future__ import annotations

from typing import Any

from vtcompress.integrations.llava_next import HOST
from vtcompress.integrations.lmms_eval.model import TransformersModel


class CompressedLlavaNext(TransformersModel):
    """``vtcompress_llava_next``: LLaVA-NeXT (transformers) with vtcompress attached."""

    default_method, default_ratio = HOST.default_method, 0.25
    default_pretrained = "llava-hf/llava-v1.6-vicuna-7b-hf"

    @staticmethod
    def loader():
        from vtcompress.integrations.llava_next.loader import load_compressed_llava

        return load_compressed_llava

    def _prompt(self, context: str, num_images: int) -> str:
        from vtcompress.integrations.prompt import chat_prompt

        return chat_prompt(self.processor, context, num_images, self.chat_template)

    def _uncompressed_images(self, inputs: dict[str, Any]) -> list[dict[str, Any]]:
        from vtcompress.integrations.llava_next.layout import AnyResLayout
        from vtcompress.integrations.lmms_eval.records import uncompressed_image_entry

        cfg = self._model.config
        entries = []
        for size in inputs["image_sizes"].tolist():
            layout = AnyResLayout.for_config(cfg, size)
            grid = (layout.rows, layout.cols)
            entries.append(
                uncompressed_image_entry(size, grid, layout.view_counts(), layout.num_newlines("unpadded"))
            )
        return entries
