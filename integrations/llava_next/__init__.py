"""LLaVA-NeXT (Hugging Face transformers) support: adapter, loader, tiny offline model."""

from vtcompress.integrations.llava_next.adapter import LlavaNextAdapter
from vtcompress.integrations.llava_next.loader import DEFAULT_MODEL, load_compressed_llava

__all__ = ["DEFAULT_MODEL", "LlavaNextAdapter", "load_compressed_llava"]
