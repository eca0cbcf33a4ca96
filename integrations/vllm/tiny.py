"""A tiny random LLaVA-NeXT checkpoint that vLLM loads (tests and benchmarks, fully offline).

Two differences from :func:`vtcompress.integrations.llava_next.tiny.build_tiny_llava_next`, both
required by vLLM (0.32, CPU): the text model's attention heads are 32 wide (vLLM's CPU attention
refuses 16), and the saved weights use the key layout of the published llava-hf checkpoints
(``vision_tower.vision_model.*``; transformers 5 writes ``vision_tower.*``, which vLLM refuses).
The same directory loads in transformers, so both runtimes see identical weights.
"""

from __future__ import annotations

import os
from pathlib import Path

from vtcompress.integrations.llava_next.tiny import build_tiny_llava_next

TEXT_HIDDEN = 128  # 4 heads of 32: the narrowest head vLLM's CPU attention runs
VISION_PREFIX = "vision_tower."


def build_tiny_for_vllm(seed: int = 0):
    """Return ``(model, processor)``: a float32 tiny LLaVA-NeXT, identical for equal seeds."""
    # head_dim follows from the width: TEXT_HIDDEN // num_attention_heads.
    return build_tiny_llava_next(seed, hidden_size=TEXT_HIDDEN, intermediate_size=2 * TEXT_HIDDEN)


def llava_hf_key(name: str) -> str:
    """``model.vision_tower.encoder...`` / ``vision_tower.encoder...`` -> llava-hf's
    ``vision_tower.vision_model.encoder...``; other keys unchanged."""
    for prefix in ("model.vision_tower.", VISION_PREFIX):
        if name.startswith(prefix):
            rest = name[len(prefix) :]
            if not rest.startswith("vision_model."):
                rest = "vision_model." + rest
            return VISION_PREFIX + rest
    return name


def save_tiny_for_vllm(path: str | os.PathLike, seed: int = 0) -> Path:
    """Save the tiny model (llava-hf key layout) and its processor to ``path``; returns it."""
    from safetensors.torch import load_file, save_file

    path = Path(path)
    model, processor = build_tiny_for_vllm(seed)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    weights = path / "model.safetensors"
    state = load_file(weights)
    save_file({llava_hf_key(k): v.contiguous() for k, v in state.items()}, weights, metadata={"format": "pt"})
    return path
