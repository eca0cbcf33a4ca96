"""``load_compressed_qwen3_vl``: a Qwen3-VL checkpoint and its processor, compressed, in one call."""

from __future__ import annotations

import os
from typing import Any

from vtcompress.api import compress, host_config
from vtcompress.config import CompressionConfig
from vtcompress.integrations.qwen3_vl import HOST
from vtcompress.registry import explicit_options

DEFAULT_MODEL = HOST.hub_example
DEFAULT_METHOD = HOST.default_method
TINY = "tiny"


def resolve_model_path(model: str | os.PathLike) -> str:
    """``"tiny"`` -> the offline tiny model (built and cached on first use); else unchanged."""
    if str(model) == TINY:
        from vtcompress.integrations.qwen3_vl.tiny import tiny_checkpoint

        return tiny_checkpoint()
    return str(model)


def load_qwen3_vl(path: str | os.PathLike, **from_pretrained_kwargs: Any):
    """``(model, processor)`` of a Qwen3-VL checkpoint, uncompressed, in eval mode (the
    image-only processor without torchvision: see :mod:`.processing`)."""
    from transformers import Qwen3VLForConditionalGeneration

    from vtcompress.integrations.qwen3_vl.processing import load_processor

    model = Qwen3VLForConditionalGeneration.from_pretrained(path, **from_pretrained_kwargs)
    hub = {k: v for k, v in from_pretrained_kwargs.items() if k in ("local_files_only", "revision", "token")}
    return model.eval(), load_processor(path, **hub)


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
    from transformers import Qwen3VLForConditionalGeneration

    from vtcompress.integrations.host import check_served
    from vtcompress.integrations.qwen3_vl.host import Qwen3VLHost
    from vtcompress.integrations.qwen3_vl.processing import load_processor

    config = host_config(Qwen3VLHost, method, **explicit_options(ratio, method_options))
    # Refuse before loading. The tower depth is not known yet: 27, the published checkpoints'
    # (the capabilities this host lacks do not depend on it).
    check_served(Qwen3VLHost, config, 26, 27)
    path = resolve_model_path(model)
    try:
        qwen = Qwen3VLForConditionalGeneration.from_pretrained(path, **from_pretrained_kwargs)
    except OSError as err:
        raise OSError(
            f"could not load Qwen3-VL weights from {path!r}: {err}\n"
            "Give a local directory or a hub id reachable from here, or model='tiny' for the offline tiny model."
        ) from err
    processor = load_processor(path)
    qwen.eval()
    compress(qwen, config)
    return qwen, processor
