"""The LLaVA-OneVision processor, also where torchvision is missing.

transformers' ``LlavaOnevisionProcessor`` always builds a video processor, which needs
torchvision; without it even ``video_processor=None`` fails the processor's class check. Images
need no video processor, so :class:`ImageOnlyOnevisionProcessor` has none (it is neither
checked nor saved) and :func:`load_processor` uses it, with the PIL image processor, when
torchvision is absent or a local checkpoint has no video processor (the tiny model).
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

from transformers import LlavaOnevisionProcessor


class ImageOnlyOnevisionProcessor(LlavaOnevisionProcessor):
    """``LlavaOnevisionProcessor`` without a video processor (images only).

    The signature is the parent's without ``video_processor``: transformers derives the
    sub-processors it checks and saves, and the options it saves, from it.
    """

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        num_image_tokens: int | None = None,
        vision_feature_select_strategy: str | None = None,
        chat_template: str | None = None,
        image_token: str = "<image>",
        video_token: str = "<video>",
        vision_aspect_ratio: str = "anyres_max_9",
        **kwargs: Any,
    ) -> None:
        super().__init__(
            image_processor,
            tokenizer,
            None,
            num_image_tokens=num_image_tokens,
            vision_feature_select_strategy=vision_feature_select_strategy,
            chat_template=chat_template,
            image_token=image_token,
            video_token=video_token,
            vision_aspect_ratio=vision_aspect_ratio,
            **kwargs,
        )
        self.video_processor = None


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
        num_image_tokens=729,
        vision_feature_select_strategy="full",
        chat_template=chat_template,
        vision_aspect_ratio="anyres_max_9",
    )


def has_video_processor(path: str | os.PathLike) -> bool:
    """False for a local checkpoint saved without a video processor; True otherwise (hub ids)."""
    folder = Path(path)
    if not folder.is_dir():
        return True
    config = folder / "processor_config.json"
    in_config = config.exists() and "video_processor" in json.loads(config.read_text())
    return in_config or (folder / "video_preprocessor_config.json").exists()


def load_processor(path: str | os.PathLike, **kwargs: Any):
    """The checkpoint's processor: ``AutoProcessor`` when torchvision is installed and the
    checkpoint has a video processor, else the image-only one built from the same files
    (tokenizer, image processor, processor options)."""
    if has_torchvision() and has_video_processor(path):
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
        **options,
    )
