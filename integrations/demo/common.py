"""What the demo's image and video comparisons share: the error a user's bad input raises, one
generate call's result, and how costs are written."""

from __future__ import annotations

import math
from dataclasses import dataclass


class InputError(ValueError):
    """Bad user input; ``str(err)`` is the message to show on the page."""


@dataclass
class RunResult:
    """One generate call. prompt_tokens: length of the prompt the language model saw."""

    answer: str
    prompt_tokens: int
    new_tokens: int
    first_token_seconds: float
    total_seconds: float


def format_flops(flops: float) -> str:
    if flops <= 0 or not math.isfinite(flops):
        return "0 FLOPs"
    exp = min(int(math.log10(flops) // 3), 5)
    unit = ["", "k", "M", "G", "T", "P"][exp]
    return f"{flops / 10 ** (3 * exp):.3g} {unit}FLOPs"
