"""Tiny offline models of every host, behind one interface the conformance suite runs on.

Every declared family with a tiny model (``HostSpec.tiny_builder``) is a :class:`HostCase` of
:data:`HOSTS`, built from its declaration; every method it serves (computed from its host's
``provides`` and the methods' ``requirements``: :mod:`vtcompress.served`) then runs through every
case of ``test_conformance.py`` on it, and every other method must be refused.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from tests.conftest import make_image
from vtcompress.hosts import HostSpec, host_spec, host_specs
from vtcompress.registry import available_methods
from vtcompress.served import served_methods


@dataclass(frozen=True)
class HostCase:
    name: str
    build: Callable[[torch.dtype], tuple[Any, Any]]  # dtype -> (model, processor), cached
    prompt: Callable[[str, int], str]  # (question, images) -> prompt text
    image_token_id: Callable[[Any], int]
    # What the host serves BY NAME (vtcompress.served): its column of the docs' methods x hosts table.
    served: frozenset[str]
    # Images whose long side exceeds this many times the short side are refused by the host's
    # processor (Qwen2.5-VL: 200); None: every aspect ratio is served.
    max_aspect_ratio: float | None = None

    def serves(self, width: int, height: int) -> bool:
        """Whether the host's processor accepts an image of this size."""
        limit = self.max_aspect_ratio
        return limit is None or max(width, height) / min(width, height) <= limit

    def inputs(
        self,
        images: list[Image.Image],
        questions: list[str] | None = None,
        per_prompt: list[int] | None = None,
    ) -> dict:
        """Processor output for ``images``; ``per_prompt[i]`` images go to prompt i (default 1 each)."""
        _, processor = self.build(torch.float32)
        per_prompt = per_prompt or [1] * len(images)
        questions = questions or [f"What is in picture {i}?" for i in range(len(per_prompt))]
        texts = [self.prompt(q, n) for q, n in zip(questions, per_prompt)]
        return dict(processor(images=images, text=texts, return_tensors="pt", padding=True))


def _builder(family: str) -> Callable[[torch.dtype], tuple[Any, Any]]:
    """The family's declared tiny model, built once per dtype."""

    @functools.cache
    def build(dtype: torch.dtype):
        model, processor = host_spec(family).load("tiny_builder")(seed=0)
        return model.to(dtype), processor

    return build


def _prompt(build: Callable[[torch.dtype], tuple[Any, Any]], family: str) -> Callable[[str, int], str]:
    """The family's declared prompt builder, on its tiny processor."""

    def prompt(question: str, images: int) -> str:
        _, processor = build(torch.float32)
        return host_spec(family).load("prompt")(processor, question, images)

    return prompt


def _case(spec: HostSpec) -> HostCase:
    build = _builder(spec.name)
    return HostCase(
        spec.name,
        build,
        _prompt(build, spec.name),
        lambda model: model.config.image_token_id,
        frozenset(served_methods(spec.load("host"))),
        max_aspect_ratio=spec.max_aspect,
    )


# Each declared family with an offline tiny model.
HOSTS = [_case(spec) for spec in host_specs() if spec.tiny_builder is not None]


# The image behaviour tests run the image methods; the video-only methods (served where a host
# takes videos) have their own suite: tests/conformance/test_video_conformance.py.
IMAGE_METHODS = frozenset(available_methods("image"))
SERVED_PAIRS = [(host, method) for host in HOSTS for method in sorted(host.served & IMAGE_METHODS)]
"""Every (host, method) a user can run by name on images: what the behaviour tests run on."""


def pair_id(value: Any) -> str:
    return value.name if isinstance(value, HostCase) else str(value)


def picture(width: int, height: int, seed: int = 0) -> Image.Image:
    return make_image(width, height, seed)
