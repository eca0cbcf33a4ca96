"""Qwen2.5-VL (Hugging Face transformers) support: host, layout, loader, tiny offline model."""

from vtcompress.integrations.qwen2_5_vl.host import Qwen2_5_VLHost
from vtcompress.integrations.qwen2_5_vl.layout import Qwen2_5_VLLayout
from vtcompress.integrations.qwen2_5_vl.loader import load_compressed_qwen2_5_vl
from vtcompress.integrations.qwen2_5_vl.processing import ImageOnlyQwen2_5_VLProcessor, merged_grid

__all__ = [
    "ImageOnlyQwen2_5_VLProcessor",
    "Qwen2_5_VLHost",
    "Qwen2_5_VLLayout",
    "load_compressed_qwen2_5_vl",
    "merged_grid",
]
