"""The LLaVA-OneVision processor, also where torchvision is missing.

transformers' ``LlavaOnevisionProcessor`` always builds a video processor, which needs
torchvision; without it even ``video_processor=None`` fails the processor's class check. Images
need no video processor, so :class:`ImageOnlyOnevisionProcessor` accepts ``None`` there and
:func:`load_processor` uses it (with the PIL image processor) when torchvision is absent.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

from transformers import LlavaOnevisionProcessor


class ImageOnlyOnevisionProcessor(LlavaOnevisionProcessor):
    """``LlavaOnevisionProcessor`` that may have no video processor (images only)."""

    def check_argument_for_proper_class(self, argument_name: str, argument: Any):
        if argument is None and argument_name == "video_processor":
            return None
        return super().check_argument_for_proper_class(argument_name, argument)


def has_torchvision() -> bool:
    return importlib.util.find_spec("torchvision") is not None


def build_processor(tokenizer, chat_template: str | None = None, **image_processor_kwargs: Any):
    """An image-only OneVision processor with the stock image-processor defaults (384 px views,
    36 pinpoints) and the model's defaults: 729 tokens a view, strategy "full", anyres_max_9."""
    from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
        LlavaOnevisionImageProcessorPil,
    )

    return ImageOnlyOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessorPil(**image_processor_kwargs),
        tokenizer=tokenizer,
        video_processor=None,
        num_image_tokens=729,
        vision_feature_select_strategy="full",
        chat_template=chat_template,
        vision_aspect_ratio="anyres_max_9",
    )


def load_processor(path: str | os.PathLike, **kwargs: Any):
    """The checkpoint's processor: ``AutoProcessor`` with torchvision, else the image-only one
    built from the same files (tokenizer, image processor, processor options)."""
    if has_torchvision():
        from transformers import AutoProcessor

        return AutoProcessor.from_pretrained(path, **kwargs)
    from transformers import AutoTokenizer
    from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
        LlavaOnevisionImageProcessorPil,
    )

    processor_dict, _ = LlavaOnevisionProcessor.get_processor_dict(path, **kwargs)
    options = {
        k: processor_dict[k]
        for k in (
            "num_image_tokens",
            "vision_feature_select_strategy",
            "vision_aspect_ratio",
            "chat_template",
        )
        if k in processor_dict
    }
    return ImageOnlyOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessorPil.from_pretrained(path, **kwargs),
        tokenizer=AutoTokenizer.from_pretrained(path, **kwargs),
        video_processor=None,
        **options,
    )
