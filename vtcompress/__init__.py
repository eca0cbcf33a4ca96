"""vtcompress: training-free visual-token compression for multimodal LLMs.

import vtcompress as vtc
model, processor = vtc.load_compressed_llava("llava-hf/llava-v1.6-vicuna-7b-hf", ratio=0.25)
handle = vtc.compress(model, "globalcom2", ratio=0.25)
handle.remove()
"""

from __future__ import annotations

from typing import Any

from vtcompress import methods  # noqa: F401  (registers the built-in methods)
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
from vtcompress.layout import Layout
from vtcompress.methods.baselines import FasterVLMConfig, RandomConfig, UniformConfig
from vtcompress.methods.globalcom2 import GlobalCom2Config
from vtcompress.methods.pitome import PiToMeConfig
from vtcompress.methods.tokencorr import TokenCorrConfig
from vtcompress.methods.tome import ToMeConfig
from vtcompress.registry import available_methods, register_method
from vtcompress.stats import CompressionStats, ImageStats, ViewStats
from vtcompress.tokens import ImageTokens, ViewOutput

__version__ = "0.1.0"


def _loader(name: str):
    """A host's ``load_compressed_*`` function, declared in the ``vtcompress.loaders`` entry points."""
    from importlib.metadata import entry_points

    found = [ep for ep in entry_points(group="vtcompress.loaders") if ep.name == name]
    if not found:
        raise ImportError(
            f"no vtcompress loader {name!r} is installed: reinstall vtcompress (pip install -e . in a checkout)"
        )
    return found[0].load()


def load_compressed_llava(*args: Any, **kwargs: Any):
    """See :func:`vtcompress.integrations.llava_next.load_compressed_llava`."""
    return _loader("llava_next")(*args, **kwargs)


def load_compressed_docowl(*args: Any, **kwargs: Any):
    """See :func:`vtcompress.integrations.docowl.load_compressed_docowl`."""
    return _loader("docowl")(*args, **kwargs)


def load_compressed_onevision(*args: Any, **kwargs: Any):
    """See :func:`vtcompress.integrations.llava_onevision.load_compressed_onevision`."""
    return _loader("llava_onevision")(*args, **kwargs)


def load_compressed_qwen2_5_vl(*args: Any, **kwargs: Any):
    """See :func:`vtcompress.integrations.qwen2_5_vl.load_compressed_qwen2_5_vl`."""
    return _loader("qwen2_5_vl")(*args, **kwargs)


__all__ = [
    "CompressionConfig",
    "CompressionHandle",
    "CompressionStats",
    "FasterVLMConfig",
    "GlobalCom2Config",
    "ImageStats",
    "ImageTokens",
    "Layout",
    "PiToMeConfig",
    "RandomConfig",
    "ToMeConfig",
    "TokenCorrConfig",
    "UniformConfig",
    "ViewOutput",
    "ViewStats",
    "available_methods",
    "compress",
    "compressed",
    "config_for",
    "get_handle",
    "load_compressed_docowl",
    "load_compressed_llava",
    "load_compressed_onevision",
    "load_compressed_qwen2_5_vl",
    "register_adapter",
    "register_host",
    "register_method",
]
