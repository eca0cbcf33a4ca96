"""LLaVA-OneVision model inputs for a clip, built from its frames without the video processor
(which needs torchvision): the same tensors as ``LlavaOnevisionVideoProcessor`` at its defaults.

Each frame is resized (bicubic) to the vision tower's square ``image_size`` (no crops, no anyres),
rescaled and normalised with the image processor's mean and std. The prompt's video placeholder
becomes ``frames * ceil(side / 2)^2 + 1`` video tokens (the frames pooled 2x2, then one newline per
video), as the processor expands it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

from vtcompress.integrations.llava_onevision.tiny import IMAGE_TOKEN, VIDEO_TOKEN
from vtcompress.integrations.llava_onevision.video import pooled_side
from vtcompress.integrations.prompt import chat_prompt


def clip_pixels(frames: list[Image.Image], image_processor: Any, image_size: int) -> torch.Tensor:
    """``pixel_values_videos`` [1, frames, 3, image_size, image_size] for one clip."""
    mean = np.asarray(image_processor.image_mean, dtype=np.float32)[:, None, None]
    std = np.asarray(image_processor.image_std, dtype=np.float32)[:, None, None]
    arrays = []
    for frame in frames:
        resized = frame.convert("RGB").resize((image_size, image_size), Image.Resampling.BICUBIC)
        pixels = np.asarray(resized, dtype=np.float32).transpose(2, 0, 1)
        arrays.append((pixels * image_processor.rescale_factor - mean) / std)
    return torch.from_numpy(np.stack(arrays))[None]


def video_inputs(
    model_config: Any, processor: Any, frames: list[Image.Image], question: str, seconds_between: float
) -> dict:
    """The model's inputs for one prompt: ``question`` about the clip ``frames``, in the
    processor's chat template (``seconds_between`` is unused: OneVision's prompt has no times)."""
    vision = model_config.vision_config
    side = pooled_side(vision.image_size, vision.patch_size)
    run = VIDEO_TOKEN * (len(frames) * side * side + 1)
    text = chat_prompt(processor, question, 1).replace(IMAGE_TOKEN, run, 1)
    enc = processor.tokenizer([text], return_tensors="pt")
    return dict(
        input_ids=enc["input_ids"],
        attention_mask=enc["attention_mask"],
        pixel_values_videos=clip_pixels(frames, processor.image_processor, vision.image_size),
    )
