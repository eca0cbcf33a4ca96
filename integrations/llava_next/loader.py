"""``load_compressed_llava``: a LLaVA-NeXT checkpoint and its processor, compressed, in one call."""

from __future__ import annotations

import os
from typing import Any

from vtcompress.config import CompressionConfig
from vtcompress.integrations.llava_next import HOST
from vtcompress.integrations.loading import hub_kwargs, load_and_compress

DEFAULT_MODEL = "llava-hf/llava-v1.6-vicuna-7b-hf"
DEFAULT_METHOD = HOST.default_method


def load_llava_next(path: str | os.PathLike, **from_pretrained_kwargs: Any):
    """``(model, processor)`` of a LLaVA-NeXT checkpoint, uncompressed, in eval mode."""
    from transformers import AutoProcessor, LlavaNextForConditionalGeneration

    model = LlavaNextForConditionalGeneration.from_pretrained(path, **from_pretrained_kwargs)
    return model.eval(), AutoProcessor.from_pretrained(path, **hub_kwargs(from_pretrained_kwargs))


def load_compressed_llava(
    model: str | os.PathLike = DEFAULT_MODEL,
    method: str | CompressionConfig = DEFAULT_METHOD,
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
    return load_and_compress(HOST, model, method, ratio, method_options, from_pretrained_kwargs)
