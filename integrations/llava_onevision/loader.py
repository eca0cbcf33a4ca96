"""``load_compressed_onevision``: a LLaVA-OneVision checkpoint and its processor, compressed, in one call."""

from __future__ import annotations

import os
from typing import Any

from vtcompress.api import compress, host_config
from vtcompress.config import CompressionConfig
from vtcompress.integrations.llava_onevision import HOST
from vtcompress.registry import explicit_options

DEFAULT_MODEL = "llava-hf/llava-onevision-qwen2-7b-ov-hf"
DEFAULT_METHOD = HOST.default_method  # with score="mean_cos", this host's default for the name
TINY = "tiny"


def onevision_config(
    method: str | CompressionConfig, ratio: float | None = None, method_options: dict[str, Any] | None = None
) -> CompressionConfig:
    """The config for ``method`` on this host: explicit options win, then the host's
    ``name_defaults`` (method names only), then the config class's defaults."""
    from vtcompress.integrations.llava_onevision.host import LlavaOnevisionHost

    return host_config(LlavaOnevisionHost, method, **explicit_options(ratio, method_options))


def resolve_model_path(model: str | os.PathLike) -> str:
    """``"tiny"`` -> the offline tiny model (built and cached on first use); else unchanged."""
    if str(model) == TINY:
        from vtcompress.integrations.llava_onevision.tiny import tiny_checkpoint

        return tiny_checkpoint()
    return str(model)


def load_compressed_onevision(
    model: str | os.PathLike = DEFAULT_MODEL,
    method: str | CompressionConfig = DEFAULT_METHOD,
    ratio: float | None = None,
    method_options: dict[str, Any] | None = None,
    **from_pretrained_kwargs: Any,
):
    """Load a LLaVA-OneVision checkpoint (hub id or local path; ``"tiny"`` for the offline tiny
    model) and compress it.

    Args:
        model: e.g. "llava-hf/llava-onevision-qwen2-0.5b-ov-hf", a local directory, or "tiny".
        method: a name from ``vtcompress.available_methods()`` or a config instance. A name gets
            this host's defaults (``LlavaOnevisionHost.name_defaults``: ``score="mean_cos"`` for
            globalcom2, ``metric="projected"`` for pitome / tome); a config instance is used as given, and a
            method it configures for [CLS] attention is refused with the option to change.
            fastervlm and tokencorr need [CLS] attention and are refused on this host.
        ratio: kept fraction of visual tokens, in (0, 1]. None: the config's own ratio.
        method_options: other options of the method's config; given here or as ``ratio`` they
            win over a passed config's values (applied to a copy; the passed config is never changed).
        **from_pretrained_kwargs: passed to ``from_pretrained`` (``dtype``, ``device_map``, ...).
    Returns:
        ``(model, processor)``; ``vtcompress.get_handle(model)`` is the compression handle. Without
        torchvision the processor is image-only (see :mod:`.processing`).
    """
    config = onevision_config(method, ratio, method_options)  # fails before loading
    path = resolve_model_path(model)
    try:
        onevision, processor = load_onevision(path, **from_pretrained_kwargs)
    except OSError as err:
        raise OSError(
            f"could not load LLaVA-OneVision weights from {path!r}: {err}\n"
            "Give a local directory or a hub id reachable from here, or model='tiny' for the offline tiny model."
        ) from err
    compress(onevision, config)
    return onevision, processor


def load_onevision(path: str | os.PathLike, **from_pretrained_kwargs: Any):
    """``(model, processor)`` of a OneVision checkpoint, uncompressed (the image-only processor
    where transformers' own cannot be built; see :mod:`.processing`)."""
    from transformers import LlavaOnevisionForConditionalGeneration

    from vtcompress.integrations.llava_onevision.processing import load_processor

    model = LlavaOnevisionForConditionalGeneration.from_pretrained(path, **from_pretrained_kwargs)
    hub = {k: v for k, v in from_pretrained_kwargs.items() if k in ("local_files_only", "revision", "token")}
    return model.eval(), load_processor(path, **hub)
