"""The prompt around images for apps that hold a question and an image count (see
:func:`~vtcompress.integrations.docowl.processing.mplug_owl2_prompt` for conversations)."""

from __future__ import annotations

from typing import Any

from vtcompress.integrations.docowl.processing import IMAGE_MARKER, mplug_owl2_prompt


def chat_prompt(processor: Any, question: str, num_images: int = 1) -> str:
    """``question`` after ``num_images`` image markers in mPLUG-Owl2's format; a question that
    already holds the marker gets none added. ``processor`` is unused (one signature for every family)."""
    if IMAGE_MARKER in question or num_images == 0:
        return mplug_owl2_prompt(question, with_image=False)
    return mplug_owl2_prompt(IMAGE_MARKER * (num_images - 1) + question)
