"""``load_compressed_onevision``: a LLaVA-OneVision checkpoint and its processor, compressed, in one call."""

from __future__ import annotations

import os
from typing import Any

from vtcompress.api import host_config
from vtcompress.config import CompressionConfig
from vtcompress.integrations.llava_onevision import HOST
from vtcompress.integrations.loading import hub_kwargs, load_and_compress
from vtcompress.registry import explicit_options

DEFAULT_MODEL = "llava-hf/llava-onevision-qwen2-7b-ov-hf"
DEFAULT_METHOD = HOST.default_method  # with score="mean_cos", this host's default for the name


def onevision_config(
    method: str | CompressionConfig, ratio: float | None = None, method_options: dict[str, Any] | None = None
) -> CompressionConfig:
    """The config for ``method`` on this host: explicit options win, then the host's
    ``name_defaults`` (method names only), then the config class's defaults."""
    from vtcompress.integrations.llava_onevision.host import LlavaOnevisionHost

    return host_config(LlavaOnevisionHost, method, **explicit_options(ratio, method_options))


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
    return load_and_compress(HOST, model, method, ratio, method_options, from_pretrained_kwargs)


def load_onevision(path: str | os.PathLike, **from_pretrained_kwargs: Any):
    """``(model, processor)`` of a OneVision checkpoint, uncompressed (the image-only processor
    where transformers' own cannot be built; see :mod:`.processing`)."""
    from transformers import LlavaOnevisionForConditionalGeneration

    from vtcompress.integrations.llava_onevision.processing import load_processor
    from vtcompress.integrations.tiny_models import loading_bars

    with loading_bars(path):
        model = LlavaOnevisionForConditionalGeneration.from_pretrained(path, **from_pretrained_kwargs)
    return model.eval(), load_processor(path, **hub_kwargs(from_pretrained_kwargs))
