"""The tiny llava-format checkpoints the llava package tests share (built once per process), and
model inputs as the original codebase builds them (``process_images``, ``tokenizer_image_token``).
Imported as ``tiny_llava`` (not ``tests.llava_pkg...``): with lmms-eval installed, a dependency
(latex2sympy2) installs a top-level ``tests`` package that would shadow this repository's.
Importing this module needs the ``llava`` package (``.venv-llava``)."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import torch
from llava.mm_utils import get_model_name_from_path, process_images, tokenizer_image_token
from llava.model.builder import load_pretrained_model

from vtcompress.integrations.llava_pkg.compat import patch_generate
from vtcompress.integrations.llava_pkg.tiny import build_tiny_llava_checkpoint

_ROOT = Path(tempfile.mkdtemp(prefix="vtc-llava-"))


@functools.cache
def checkpoint(anyres: bool = True) -> Path:
    return build_tiny_llava_checkpoint(_ROOT / ("anyres" if anyres else "pad"), anyres=anyres, seed=0)


@functools.cache
def loaded(anyres: bool = True):
    """(tokenizer, float32 model, image_processor) through ``load_pretrained_model`` on the CPU."""
    path = str(checkpoint(anyres))
    tokenizer, model, processor, _ = load_pretrained_model(
        path, None, get_model_name_from_path(path), device_map="cpu", device="cpu"
    )
    model.float().eval()
    patch_generate(model)
    return tokenizer, model, processor


def prompt(question: str, images: int = 1) -> str:
    return "USER: " + "<image>\n" * images + f"{question} ASSISTANT:"


def inputs(anyres: bool, images: list, questions: list[str] | None = None, per_prompt=None) -> dict:
    """``input_ids`` (padded on the model's ``tokenizer_padding_side``), ``attention_mask``,
    ``images`` and ``image_sizes`` (PIL (width, height)) for ``images``."""
    tokenizer, model, processor = loaded(anyres)
    per_prompt = per_prompt or [1] * len(images)
    questions = questions or [f"What is in picture {i}?" for i in range(len(per_prompt))]
    rows = [
        tokenizer_image_token(prompt(q, n), tokenizer, return_tensors="pt")
        for q, n in zip(questions, per_prompt)
    ]
    width = max(len(r) for r in rows)
    left = getattr(model.config, "tokenizer_padding_side", "right") == "left"
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for b, r in enumerate(rows):
        cols = slice(width - len(r), width) if left else slice(0, len(r))
        ids[b, cols], mask[b, cols] = r, 1
    pixels = process_images(images, processor, model.config)
    pixels = [p.float() for p in pixels] if isinstance(pixels, list) else pixels.float()
    return dict(input_ids=ids, attention_mask=mask, images=pixels, image_sizes=[im.size for im in images])
