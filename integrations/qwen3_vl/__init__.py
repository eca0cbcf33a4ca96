"""Qwen3-VL (Hugging Face transformers) support: host (DeepStack included), layout, loader, tiny offline model."""

from vtcompress.integrations.qwen3_vl.host import Qwen3VLHost
from vtcompress.integrations.qwen3_vl.layout import Qwen3VLLayout
from vtcompress.integrations.qwen3_vl.loader import load_compressed_qwen3_vl
from vtcompress.integrations.qwen3_vl.processing import ImageOnlyQwen3VLProcessor, merged_grid

__all__ = [
    "ImageOnlyQwen3VLProcessor",
    "Qwen3VLHost",
    "Qwen3VLLayout",
    "load_compressed_qwen3_vl",
    "merged_grid",
]
