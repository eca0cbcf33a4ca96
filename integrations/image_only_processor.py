"""Processors of image + video models that work without torchvision (images only).

transformers' processors of models with a video input (Qwen2.5-VL, Qwen3-VL, ...) always build
a video processor, which needs torchvision; without it the processor cannot even be constructed
(``video_processor=None`` is refused by the class check). A subclass that mixes in
:class:`OptionalVideoProcessor` accepts ``video_processor=None`` and, with the PIL image
processor, handles images on a CPU-only torch; with torchvision installed the stock processor
works as well (and handles videos).
"""

from __future__ import annotations

import os
from typing import Any


class OptionalVideoProcessor:
    """Mixin for a ``ProcessorMixin`` subclass: ``video_processor`` may be None (images only)."""

    def check_argument_for_proper_class(self, argument_name: str, argument: Any):
        if argument is None and argument_name == "video_processor":
            return None
        return super().check_argument_for_proper_class(argument_name, argument)


def load_processor(path: str | os.PathLike, image_only_cls: type, image_processor_cls: type, **kwargs: Any):
    """The checkpoint's processor: the stock one where torchvision is installed (and the
    checkpoint has a processor config), else ``image_only_cls`` (an :class:`OptionalVideoProcessor`)
    from its tokenizer and an ``image_processor_cls`` read from its image processor config."""
    from transformers import AutoTokenizer, ProcessorMixin

    try:
        import torchvision  # noqa: F401
    except ImportError:
        pass
    else:
        from transformers import AutoProcessor

        processor = AutoProcessor.from_pretrained(path, **kwargs)
        if isinstance(processor, ProcessorMixin):
            return processor
    tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
    return image_only_cls(
        image_processor=image_processor_cls.from_pretrained(path, **kwargs),
        tokenizer=tokenizer,
        video_processor=None,
        chat_template=getattr(tokenizer, "chat_template", None),
    )


def save_processor_parts(processor: Any, path: str | os.PathLike) -> None:
    """Save an image-only processor where :func:`load_processor` reads it back: it has no video
    processor to save, so its tokenizer and image processor are saved one by one."""
    processor.tokenizer.save_pretrained(path)
    processor.image_processor.save_pretrained(path)
