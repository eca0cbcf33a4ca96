"""``load_compressed_llava``: a LLaVA-NeXT checkpoint and its processor, compressed, in one call."""

from __future__ import annotations

import os
from typing import Any

from vtcompress.api import compress, host_config
from vtcompress.config import CompressionConfig
from vtcompress.integrations.llava_next import HOST
from vtcompress.registry import explicit_options

DEFAULT_MODEL = "llava-hf/llava-v1.6-vicuna-7b-hf"
DEFAULT_METHOD = HOST.default_method
TINY = "tiny"


def resolve_model_path(model: str | os.PathLike) -> str:
    """``"tiny"`` -> the offline tiny model (built and cached on first use); else unchanged."""
    if str(model) == TINY:
        from vtcompress.integrations.llava_next.tiny import tiny_checkpoint

        return tiny_checkpoint()
    return str(model)


def load_llava_next(path: str | os.PathLike, **from_pretrained_kwargs: Any):
    """``(model, processor)`` of a LLaVA-NeXT checkpoint, uncompressed, in eval mode."""
    from transformers import AutoProcessor, LlavaNextForConditionalGeneration

    model = LlavaNextForConditionalGeneration.from_pretrained(path, **from_pretrained_kwargs)
    hub = {k: v for k, v in from_pretrained_kwargs.items() if k in ("local_files_only", "revision", "token")}
    return model.eval(), AutoProcessor.from_pretrained(path, **hub)


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
    from transformers import AutoProcessor, LlavaNextForConditionalGeneration

    from vtcompress.integrations.llava_next.host import LlavaNextHost

    config = host_config(LlavaNextHost, method, **explicit_options(ratio, method_options))  # before loading
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
