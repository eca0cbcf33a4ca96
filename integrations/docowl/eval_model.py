"""``vtcompress_docowl``: the mPLUG-DocOwl1.5 port as an lmms-eval model (see :mod:`.model`)."""

from __future__ import annotations

from typing import Any

from vtcompress.integrations.docowl import HOST
from vtcompress.integrations.lmms_eval.model import CompressedModel


class CompressedDocOwl(CompressedModel):
    """``vtcompress_docowl``: the mPLUG-DocOwl1.5 port with vtcompress attached.

    ``pretrained``: an official checkpoint (``mPLUG/DocOwl1.5-Chat``...) or a local folder in its
    format. Prompts follow the official ``mplug_owl2`` conversation. Tokens are counted as the
    DocOwl adapter does: 256 H-Reducer tokens per view (newlines column: one ``vit_eos`` a view).
    """

    default_method, default_ratio = HOST.default_method, 0.5

    def __init__(self, pretrained: str = "mPLUG/DocOwl1.5-Chat", **kwargs: Any) -> None:
        super().__init__(pretrained, **kwargs)

    def _load(self, pretrained, method, ratio, dtype, attn_implementation, options):
        from vtcompress.integrations.docowl import load_compressed_docowl

        load_kwargs: dict[str, Any] = {"dtype": None if dtype == "auto" else dtype, "device": self._device}
        if attn_implementation:
            load_kwargs["attn_implementation"] = attn_implementation
        return load_compressed_docowl(pretrained, method, ratio, options, **load_kwargs)

    def _prompt(self, context: str, num_images: int) -> str:
        from vtcompress.integrations.docowl.prompt import chat_prompt

        return chat_prompt(self.processor, context, num_images)

    def _inputs(self, prompts: list[str], images: list) -> dict[str, Any]:
        inputs = {
            k: v.to(self._device) for k, v in self.processor(images=images or None, text=prompts).items()
        }
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self._model.dtype)
        return inputs

    def _text_config(self):
        return self._model.config

    def _uncompressed_images(self, inputs: dict[str, Any]) -> list[dict[str, Any]]:
        from vtcompress.integrations.lmms_eval.records import uncompressed_image_entry

        per_view = self._model.config.tokens_per_view - 1  # vit_eos apart
        entries = []
        for (global_views, rows, cols), size in zip(
            inputs["image_grids"].tolist(), inputs["image_sizes"].tolist()
        ):
            views = global_views + rows * cols
            entries.append(uncompressed_image_entry(size, (rows, cols), [per_view] * views, views))
        return entries
