"""The prompt a processor expects around images (its chat template, else the llava-hf format): one
rule for the CLI, the demo, the lmms-eval models and the benchmarks."""

from __future__ import annotations

from typing import Any


def chat_prompt(processor: Any, question: str, num_images: int = 1, chat_template: str | None = None) -> str:
    """``question`` after ``num_images`` image placeholders, in the processor's chat template.

    A question that already holds the image token gets no placeholder added. Without a chat
    template (``chat_template`` or the processor's own) the plain ``USER: <image>\\n... ASSISTANT:``
    format of the llava-hf checkpoints is used.
    """
    image_token = getattr(processor, "image_token", "<image>")
    images = 0 if image_token in question else num_images
    template = chat_template or getattr(processor, "chat_template", None)
    if template:
        content = [{"type": "image"}] * images + [{"type": "text", "text": question}]
        return processor.apply_chat_template(
            [{"role": "user", "content": content}],
            chat_template=template,
            add_generation_prompt=True,
            tokenize=False,
        )
    return "USER: " + f"{image_token}\n" * images + f"{question} ASSISTANT:"
