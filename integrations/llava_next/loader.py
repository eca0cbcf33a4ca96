"""``load_compressed_llava``: a LLaVA-NeXT checkpoint and its processor, compressed, in one call."""

from __future__ import annotations

import os
from typing import Any

from vtcompress.api import compress
from vtcompress.config import CompressionConfig
from vtcompress.registry import explicit_options, make_config

DEFAULT_MODEL = "llava-hf/llava-v1.6-vicuna-7b-hf"
TINY = "tiny"


def resolve_model_path(model: str | os.PathLike) -> str:
    """``"tiny"`` -> the offline tiny model (built and cached on first use); else unchanged."""
    if str(model) == TINY:
        from vtcompress.integrations.llava_next.tiny import default_tiny_path, save_tiny_llava_next

        path = default_tiny_path()
        if not (path / "config.json").exists():
            save_tiny_llava_next(path)
        return str(path)
    return str(model)


def load_compressed_llava(
    model: str | os.PathLike = DEFAULT_MODEL,
    method: str | CompressionConfig = "globalcom2",
    ratio: float | None = None,
    method_options: dict[str, Any] | None = None,
    **from_pretrained_kwargs: Any,
):
    """Load a LLaVA-NeXT checkpoint (hub id or local path; ``"tiny"`` for the offline tiny model)
    and compress it.

    Args:
        model: e.g. "llava-hf/llava-v1.6-mistral-7b-hf", a local directory, or "tiny".
        method: a name from ``vtcompress.available_methods()`` or a config instance.
        ratio: kept fraction of visual tokens, in (0, 1]. None (default): the config's own ratio
            (a passed config keeps its ratio; a method name gets its config's default, 0.25).
        method_options: other options of the method's config, e.g. ``{"allocation": "paper"}``.
            Options given here or as ``ratio`` win over a passed config's values (applied to a
            copy; the passed config is never changed).
        **from_pretrained_kwargs: passed to ``from_pretrained`` (``dtype``, ``device_map``, ...).
    Returns:
        ``(model, processor)``; ``vtcompress.get_handle(model)`` is the compression handle.
    """
    from transformers import AutoProcessor, LlavaNextForConditionalGeneration

    config = make_config(method, **explicit_options(ratio, method_options))  # fails before loading
    path = resolve_model_path(model)
    try:
        llava = LlavaNextForConditionalGeneration.from_pretrained(path, **from_pretrained_kwargs)
    except OSError as err:
        raise OSError(
            f"could not load LLaVA-NeXT weights from {path!r}: {err}\n"
            "Give a local directory or a hub id reachable from here, or model='tiny' for the offline tiny model."
        ) from err
    processor = AutoProcessor.from_pretrained(path)
    llava.eval()
    compress(llava, config)
    return llava, processor
