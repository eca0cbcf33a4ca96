"""LLaVA-NeXT (Hugging Face transformers) support: adapter, loader, tiny offline model."""

from .adapter import LlavaNextAdapter
from .loader import DEFAULT_MODEL, load_compressed_llava

__all__ = ["DEFAULT_MODEL", "LlavaNextAdapter", "load_compressed_llava"]
