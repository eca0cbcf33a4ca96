"""LLaVA-OneVision (Hugging Face transformers) support: host, loader, tiny offline model."""

from vtcompress.integrations.llava_onevision.host import LlavaOnevisionHost
from vtcompress.integrations.llava_onevision.loader import DEFAULT_MODEL, load_compressed_onevision

__all__ = ["DEFAULT_MODEL", "LlavaOnevisionHost", "load_compressed_onevision"]
