"""What every tiny offline model shares: seeded construction, the cache folder, and the marker
that says a saved checkpoint has random weights (the CLI and demo warn about its answers)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

MARKER = "vtcompress.json"


def seeded_model(model_cls: type, config: Any, seed: int, tokenizer: Any, dtype: torch.dtype):
    """``model_cls(config)`` with weights drawn from ``seed`` alone (the global RNG is left as it
    was), pad/eos ids from ``tokenizer``, in ``dtype`` and eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model.to(dtype).eval()


def cache_path(folder: str) -> Path:
    """``folder`` in vtcompress's cache (``VTCOMPRESS_CACHE``, default ``~/.cache/vtcompress``)."""
    root = Path(os.environ.get("VTCOMPRESS_CACHE", Path.home() / ".cache" / "vtcompress"))
    return root / folder


def mark_random(path: Path, name: str, seed: int) -> None:
    """Record in a saved checkpoint that its weights are random."""
    (path / MARKER).write_text(json.dumps({"name": name, "seed": seed, "random_weights": True}))


def is_random_tiny(path: str | os.PathLike) -> bool:
    marker = Path(path) / MARKER
    return marker.exists() and json.loads(marker.read_text()).get("random_weights", False)
