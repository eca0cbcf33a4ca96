"""LLaVA-NeXT (Hugging Face transformers) support: host, loader, tiny offline model."""

from vtcompress.integrations.llava_next.host import LlavaNextHost
from vtcompress.integrations.llava_next.loader import DEFAULT_MODEL, load_compressed_llava

__all__ = ["DEFAULT_MODEL", "LlavaNextHost", "load_compressed_llava"]
