"""``vtcompress_llava_onevision``: LLaVA-OneVision (transformers) as an lmms-eval model (see :mod:`.model`)."""

from __future__ import annotations

from typing import Any

from vtcompress.integrations.llava_onevision import HOST
from vtcompress.integrations.lmms_eval.model import TransformersModel

QWEN_TURNS = "<|im_start|>user\n{images}{text}<|im_end|>\n<|im_start|>assistant\n"


class CompressedLlavaOnevision(TransformersModel):
    """``vtcompress_llava_onevision``: LLaVA-OneVision (transformers) with vtcompress attached.

    Method names get the OneVision host's defaults (``score="mean_cos"`` for globalcom2,
    ``metric="projected"`` for pitome / tome); fastervlm and tokencorr are refused (no [CLS]). A
    request with several images is a multi-image sample, as OneVision's processor treats it: one
    27 x 27 view + one newline per image; a request with one image is an anyres sample.
    """

    default_method, default_ratio = HOST.default_method, 0.25
    family = HOST  # videos: HOST.video_inputs, HOST.video_frames
    default_pretrained = "llava-hf/llava-onevision-qwen2-7b-ov-hf"

    @staticmethod
    def loader():
        from vtcompress.integrations.llava_onevision.loader import load_compressed_onevision

        return load_compressed_onevision

    @property
    def _image_token(self) -> str:
        return getattr(self.processor, "image_token", "<image>")

    def _prompt(self, context: str, num_images: int) -> str:
        templated = self._template_prompt(context, num_images, self._image_token)
        if templated is not None:
            return templated
        images = "" if self._image_token in context else f"{self._image_token}\n" * num_images
        return QWEN_TURNS.format(images=images, text=context)

    def _inputs(self, prompts: list[str], images: list) -> dict[str, Any]:
        nested, cursor = [], 0  # images per prompt: OneVision's multi-image samples
        for prompt in prompts:
            count = prompt.count(self._image_token)
            nested.append(images[cursor : cursor + count])
            cursor += count
        if cursor != len(images):
            raise ValueError(f"the prompts hold {cursor} image tokens for {len(images)} images")
        inputs = self.processor(
            images=nested if images else None, text=prompts, padding=True, return_tensors="pt"
        )
        return self._to_model(inputs)

    def _uncompressed_images(self, inputs: dict[str, Any]) -> list[dict[str, Any]]:
        from vtcompress.integrations.llava_onevision.layout import OneVisionLayout
        from vtcompress.integrations.lmms_eval.records import uncompressed_image_entry

        cfg = self._model.config
        single = [n == 1 for n in inputs["batch_num_images"].tolist() for _ in range(n)]
        entries = []
        for size, anyres in zip(inputs["image_sizes"].tolist(), single):
            if anyres:
                layout = OneVisionLayout.for_image(
                    size,
                    cfg.image_grid_pinpoints,
                    cfg.vision_config.image_size,
                    cfg.vision_config.patch_size,
                    vision_aspect_ratio=cfg.vision_aspect_ratio,
                )
            else:
                layout = OneVisionLayout.single_view(
                    cfg.vision_config.image_size // cfg.vision_config.patch_size
                )
            grid = (layout.rows, layout.cols)
            entries.append(uncompressed_image_entry(size, grid, layout.view_counts(), layout.num_newlines()))
        return entries
