"""The prompt a Qwen3-VL processor expects around images where the checkpoint has no chat
template (the tiny offline model, the lmms-eval model's fallback)."""

from __future__ import annotations

VISION_START, VISION_END = "<|vision_start|>", "<|vision_end|>"
IMAGE_TOKEN, VIDEO_TOKEN = "<|image_pad|>", "<|video_pad|>"
IMAGE_PROMPT = VISION_START + IMAGE_TOKEN + VISION_END


def prompt(question: str, images: int = 1) -> str:
    """``images`` image markers followed by ``question``, in a plain ``USER: / ASSISTANT:`` turn."""
    return f"USER: {IMAGE_PROMPT * images}{question}\nASSISTANT:"
