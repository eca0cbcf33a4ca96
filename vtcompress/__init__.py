"""vtcompress: training-free visual-token compression for multimodal LLMs.

import vtcompress as vtc
model, processor = vtc.load_compressed_llava("llava-hf/llava-v1.6-vicuna-7b-hf", ratio=0.25)
handle = vtc.compress(model, "globalcom2", ratio=0.25)
handle.remove()

The public names below are imported on first use (``vtc.compress`` imports torch then), so that
``import vtcompress`` and the ``vtcompress`` command's ``--help`` stay fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public name -> the module that defines it.
_EXPORTS = {
    "CompressionHandle": "vtcompress.api",
    "compress": "vtcompress.api",
    "compressed": "vtcompress.api",
    "config_for": "vtcompress.api",
    "get_handle": "vtcompress.api",
    "register_adapter": "vtcompress.api",
    "register_host": "vtcompress.api",
    "HostSpec": "vtcompress.hosts",
    "CompressionConfig": "vtcompress.config",
    "Layout": "vtcompress.layout",
    "EVSConfig": "vtcompress.methods.evs",
    "FasterVLMConfig": "vtcompress.methods.baselines",
    "RandomConfig": "vtcompress.methods.baselines",
    "UniformConfig": "vtcompress.methods.baselines",
    "DivPruneConfig": "vtcompress.methods.divprune",
    "DownsampleConfig": "vtcompress.methods.downsample",
    "VisionZipConfig": "vtcompress.methods.visionzip",
    "GlobalCom2Config": "vtcompress.methods.globalcom2",
    "PiToMeConfig": "vtcompress.methods.pitome",
    "TokenCorrConfig": "vtcompress.methods.tokencorr",
    "ToMeConfig": "vtcompress.methods.tome",
    "VidCom2Config": "vtcompress.methods.vidcom2",
    "DyCokeTTMConfig": "vtcompress.methods.video_baselines",
    "VisionZipVideoConfig": "vtcompress.methods.video_baselines",
    "available_methods": "vtcompress.registry",
    "register_method": "vtcompress.registry",
    "CompressionStats": "vtcompress.stats",
    "ImageStats": "vtcompress.stats",
    "ViewStats": "vtcompress.stats",
    "ImageTokens": "vtcompress.tokens",
    "ViewOutput": "vtcompress.tokens",
    "VideoLayout": "vtcompress.video",
}

if TYPE_CHECKING:  # what type checkers and editors see; at run time __getattr__ imports on demand
    from vtcompress.api import (
        CompressionHandle,
        compress,
        compressed,
        config_for,
        get_handle,
        register_adapter,
        register_host,
    )
    from vtcompress.config import CompressionConfig
    from vtcompress.hosts import HostSpec
    from vtcompress.layout import Layout
    from vtcompress.methods.baselines import FasterVLMConfig, RandomConfig, UniformConfig
    from vtcompress.methods.divprune import DivPruneConfig
    from vtcompress.methods.downsample import DownsampleConfig
    from vtcompress.methods.evs import EVSConfig
    from vtcompress.methods.globalcom2 import GlobalCom2Config
    from vtcompress.methods.pitome import PiToMeConfig
    from vtcompress.methods.tokencorr import TokenCorrConfig
    from vtcompress.methods.tome import ToMeConfig
    from vtcompress.methods.vidcom2 import VidCom2Config
    from vtcompress.methods.video_baselines import DyCokeTTMConfig, VisionZipVideoConfig
    from vtcompress.methods.visionzip import VisionZipConfig
    from vtcompress.registry import available_methods, register_method
    from vtcompress.stats import CompressionStats, ImageStats, ViewStats
    from vtcompress.tokens import ImageTokens, ViewOutput
    from vtcompress.video import VideoLayout


def load_compressed(
    model: Any,
    method: str | CompressionConfig | None = None,
    ratio: float | None = None,
    method_options: dict[str, Any] | None = None,
    family: str | None = None,
    **from_pretrained_kwargs: Any,
):
    """Load a checkpoint of any declared family and compress it: ``(model, processor)``.

    ``model`` is a hub id, a local directory, or an offline tiny model's name (``"tiny"``, ...);
    the family comes from its config's ``model_type`` unless ``family`` (a declared family's
    name, e.g. the key of its ``vtcompress.hosts`` entry point) says it. ``method`` None: the
    family's default. The rest as in the family's own ``load_compressed_*`` (e.g.
    :func:`load_compressed_llava`).
    """
    spec = _family_of(model, family)
    loader = spec.load("loader")
    tiny = spec.tiny_name is not None and str(model) == spec.tiny_name
    return loader(
        "tiny" if tiny else model,
        spec.default_method if method is None else method,
        ratio,
        method_options,
        **from_pretrained_kwargs,
    )


def _family_of(model: Any, family: str | None):
    from vtcompress.hosts import host_spec, spec_for_model_type, spec_for_tiny

    if family is not None:
        return host_spec(family)
    spec = spec_for_tiny(str(model))
    if spec is not None:
        return spec
    model_type = _model_type(str(model))
    spec = spec_for_model_type(model_type) if model_type else None
    if spec is None or spec.loader is None:
        raise ValueError(
            f"no vtcompress loader for {str(model)!r} (model_type {model_type!r}); pass family=... "
            "naming a declared family (vtcompress.hosts.host_specs())"
        )
    return spec


def _model_type(model: str) -> str | None:
    """``model_type`` in the ``config.json`` of a local checkpoint folder or a hub id."""
    import json
    import os

    path = os.path.join(os.path.expanduser(model), "config.json")
    if not os.path.isfile(path):
        from huggingface_hub import hf_hub_download

        path = hf_hub_download(model, "config.json")
    with open(path) as f:
        return json.load(f).get("model_type")


def _named_loaders() -> dict[str, Any]:
    """``load_compressed_<name>`` -> its family's declaration (``HostSpec.loader_alias``)."""
    from vtcompress.hosts import host_specs

    return {s.loader_alias: s for s in host_specs() if s.loader_alias and s.loader}


def __getattr__(name: str) -> Any:
    """The public names above, ``vtcompress.load_compressed_llava`` and the other families' named
    loaders (found in the declarations), and ``vtc.<Method>Config`` for a method this module does not
    list (a newer built-in or a third-party method of the ``vtcompress.methods`` group); each
    imported on first use."""
    module = _EXPORTS.get(name)
    if module is not None:
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value  # later lookups skip __getattr__
        return value
    if name.startswith("load_compressed_"):
        spec = _named_loaders().get(name)
        if spec is not None:
            return spec.load("loader")
    if name.endswith("Config") and not name.startswith("_"):
        from vtcompress.registry import available_methods, get_method

        for method in available_methods():
            config_cls = get_method(method).config_cls
            if config_cls.__name__ == name:
                return config_cls
    raise AttributeError(f"module 'vtcompress' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS, *_named_loaders()})


__all__ = [
    "CompressionConfig",
    "CompressionHandle",
    "CompressionStats",
    "DivPruneConfig",
    "DownsampleConfig",
    "DyCokeTTMConfig",
    "EVSConfig",
    "FasterVLMConfig",
    "GlobalCom2Config",
    "HostSpec",
    "ImageStats",
    "ImageTokens",
    "Layout",
    "PiToMeConfig",
    "RandomConfig",
    "ToMeConfig",
    "TokenCorrConfig",
    "UniformConfig",
    "ViewOutput",
    "VidCom2Config",
    "VideoLayout",
    "ViewStats",
    "VisionZipConfig",
    "VisionZipVideoConfig",
    "available_methods",
    "compress",
    "compressed",
    "config_for",
    "get_handle",
    "load_compressed",
    "register_adapter",
    "register_host",
    "register_method",
]
