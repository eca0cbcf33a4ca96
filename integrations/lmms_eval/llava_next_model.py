"""``vtcompress_llava_next``: LLaVA-NeXT (transformers) as an lmms-eval model (see :mod:`.model`)."""

from __future__ import annotations

from typing import Any

from vtcompress.integrations.lmms_eval.model import CompressedModel


class CompressedLlavaNext(CompressedModel):
    """``vtcompress_llava_next``: LLaVA-NeXT (transformers) with vtcompress attached."""

    default_method, default_ratio = "globalcom2", 0.25

    def __init__(
        self,
        pretrained: str = "llava-hf/llava-v1.6-vicuna-7b-hf",
        device_map: str | None = None,
        chat_template: str | None = None,
        **kwargs: Any,
    ) -> None:
        self.device_map, self.chat_template = device_map, chat_template
        super().__init__(pretrained, **kwargs)

    def _load(self, pretrained, method, ratio, dtype, attn_implementation, options):
        from vtcompress.integrations.llava_next.loader import load_compressed_llava

        load_kwargs: dict[str, Any] = {"dtype": dtype}
        if attn_implementation:
            load_kwargs["attn_implementation"] = attn_implementation
        if self.device_map:
            load_kwargs["device_map"] = self.device_map
        model, processor = load_compressed_llava(pretrained, method, ratio, options, **load_kwargs)
        if not self.device_map:
            model.to(self._device)
        processor.tokenizer.padding_side = "left"  # batched generation continues after the prompt
        return model, processor

    def _prompt(self, context: str, num_images: int) -> str:
        from vtcompress.integrations.llava_next.prompt import chat_prompt

        return chat_prompt(self.processor, context, num_images, self.chat_template)

    def _inputs(self, prompts: list[str], images: list) -> dict[str, Any]:
        inputs = self.processor(images=images or None, text=prompts, padding=True, return_tensors="pt").to(
            self._device
        )
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self._model.dtype)
        return inputs

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
