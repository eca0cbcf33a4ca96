"""Tiny offline models of every host, behind one interface the conformance suite runs on.

A new host adds a :class:`HostCase` to :data:`HOSTS`; every registered method then runs through
every case of ``test_conformance.py`` on it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

import vtcompress as vtc
from tests.conftest import make_image


@dataclass(frozen=True)
class HostCase:
    name: str
    build: Callable[[torch.dtype], tuple[Any, Any]]  # dtype -> (model, processor), cached
    prompt: Callable[[str, int], str]  # (question, images) -> prompt text
    image_token_id: Callable[[Any], int]
    # The methods x hosts table of the docs (README, docs/index.md): what the host serves BY NAME.
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


@functools.cache
def _llava(dtype: torch.dtype):
    from vtcompress.integrations.llava_next.tiny import build_tiny_llava_next

    model, processor = build_tiny_llava_next(seed=0)
    return model.to(dtype), processor


@functools.cache
def _docowl(dtype: torch.dtype):
    from vtcompress.integrations.docowl.tiny import build_tiny_docowl

    model, processor = build_tiny_docowl(seed=0)
    return model.to(dtype), processor


@functools.cache
def _onevision(dtype: torch.dtype):
    from vtcompress.integrations.llava_onevision.tiny import build_tiny_onevision

    model, processor = build_tiny_onevision(seed=0)
    return model.to(dtype), processor


@functools.cache
def _qwen2_5_vl(dtype: torch.dtype):
    from vtcompress.integrations.qwen2_5_vl.tiny import build_tiny_qwen2_5_vl

    model, processor = build_tiny_qwen2_5_vl(seed=0)
    return model.to(dtype), processor


@functools.cache
def _qwen3_vl(dtype: torch.dtype):
    from vtcompress.integrations.qwen3_vl.tiny import build_tiny_qwen3_vl

    model, processor = build_tiny_qwen3_vl(seed=0)
    return model.to(dtype), processor


def _qwen3_vl_prompt(question: str, images: int) -> str:
    from vtcompress.integrations.qwen3_vl.prompt import prompt

    return prompt(question, images)


def _qwen2_5_vl_prompt(question: str, images: int) -> str:
    from vtcompress.integrations.qwen2_5_vl.prompt import prompt

    return prompt(question, images)


def _docowl_prompt(question: str, images: int) -> str:
    from vtcompress.integrations.docowl.processing import IMAGE_MARKER, mplug_owl2_prompt

    return mplug_owl2_prompt(IMAGE_MARKER * (images - 1) + question)


# Every registered method: a new method joins the hosts that serve everything by registering.
EVERY_METHOD = frozenset(vtc.available_methods())

HOSTS = [
    HostCase(
        "llava_next",
        _llava,
        lambda q, n: "USER: " + "<image>\n" * n + f"{q} ASSISTANT:",
        lambda model: model.config.image_token_id,
        EVERY_METHOD,
    ),
    HostCase(
        "docowl",
        _docowl,
        _docowl_prompt,
        lambda model: model.config.image_token_id,
        EVERY_METHOD,
    ),
    HostCase(
        "llava_onevision",
        _onevision,
        lambda q, n: "<|im_start|>user\n" + "<image>\n" * n + f"{q}<|im_end|>\n<|im_start|>assistant\n",
        lambda model: model.config.image_token_id,
        frozenset({"globalcom2", "pitome", "random", "tome", "uniform"}),  # no [CLS]
    ),
    HostCase(
        "qwen2_5_vl",
        _qwen2_5_vl,
        _qwen2_5_vl_prompt,
        lambda model: model.config.image_token_id,
        frozenset({"pitome", "random", "tome", "uniform"}),  # no [CLS], no thumbnail
        max_aspect_ratio=200,
    ),
    HostCase(
        "qwen3_vl",
        _qwen3_vl,
        _qwen3_vl_prompt,
        lambda model: model.config.image_token_id,
        frozenset({"pitome", "random", "tome", "uniform"}),  # no [CLS], no thumbnail
        max_aspect_ratio=200,
    ),
]


SERVED_PAIRS = [(host, method) for host in HOSTS for method in sorted(host.served)]
"""Every (host, method) a user can run by name: what the behaviour tests run on."""


def pair_id(value: Any) -> str:
    return value.name if isinstance(value, HostCase) else str(value)


def picture(width: int, height: int, seed: int = 0) -> Image.Image:
    return make_image(width, height, seed)
