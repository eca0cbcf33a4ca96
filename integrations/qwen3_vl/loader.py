"""``load_compressed_qwen3_vl``: a Qwen3-VL checkpoint and its processor, compressed, in one call."""

from __future__ import annotations

import os
from typing import Any

from vtcompress.config import CompressionConfig
from vtcompress.integrations.loading import hub_kwargs, load_and_compress
from vtcompress.integrations.qwen3_vl import HOST

DEFAULT_MODEL = HOST.hub_example
DEFAULT_METHOD = HOST.default_method


def load_qwen3_vl(path: str | os.PathLike, **from_pretrained_kwargs: Any):
    """``(model, processor)`` of a Qwen3-VL checkpoint, uncompressed, in eval mode (the
    image-only processor without torchvision: see :mod:`.processing`)."""
    from transformers import Qwen3VLForConditionalGeneration

    from vtcompress.integrations.qwen3_vl.processing import load_processor

    model = Qwen3VLForConditionalGeneration.from_pretrained(path, **from_pretrained_kwargs)
    return model.eval(), load_processor(path, **hub_kwargs(from_pretrained_kwargs))


def load_compressed_qwen3_vl(
    model: str | os.PathLike = DEFAULT_MODEL,
    method: str | CompressionConfig = DEFAULT_METHOD,
    ratio: float | None = None,
    method_options: dict[str, Any] | None = None,
    **from_pretrained_kwargs: Any,
):
    """Load a Qwen3-VL checkpoint (hub id or local path; ``"tiny"`` for the offline tiny model)
    and compress it.

    Args:
        model: e.g. "Qwen/Qwen3-VL-4B-Instruct", a local directory, or "tiny".
        method: a method this host serves ("uniform", "random", "pitome", "tome"; see
            docs/hosts/qwen3-vl.md) or a config instance. A name gets this host's defaults
            (``metric="projected"`` for pitome / tome); a config instance is used as given. Other
            methods are refused before the weights load.
        ratio: kept fraction of merged visual tokens, in (0, 1]. None (default): the config's
            own ratio (a passed config keeps its ratio; a method name gets its default, 0.25).
        method_options: other options of the method's config. Options given here or as ``ratio``
            win over a passed config's values (applied to a copy; the passed config is never
            changed).
        **from_pretrained_kwargs: passed to ``from_pretrained`` (``dtype``, ``device_map``, ...).
    Returns:
        ``(model, processor)``; ``vtcompress.get_handle(model)`` is the compression handle. Without
        torchvision the processor handles images only.
    """
    return load_and_compress(
        HOST, model, method, ratio, method_options, from_pretrained_kwargs, tower_depth=27
    )
