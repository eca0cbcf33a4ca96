"""LLaVA-NeXT (Hugging Face transformers): host, loader, tiny offline model.

:data:`HOST` declares the family (``vtcompress.hosts`` entry point); importing this package
imports neither transformers nor the host.
"""

from vtcompress.hosts import HostSpec, lazy_export

_PKG = __name__

HOST = HostSpec(
    name="llava_next",
    display_name="LLaVA-NeXT",
    host=f"{_PKG}.host:LlavaNextHost",
    model_classes=("LlavaNextForConditionalGeneration", "LlavaNextModel"),
    model_types=("llava_next",),
    loader=f"{_PKG}.loader:load_compressed_llava",
    loader_alias="load_compressed_llava",
    load_uncompressed=f"{_PKG}.loader:load_llava_next",
    default_method="globalcom2",
    hub_example="llava-hf/llava-v1.6-mistral-7b-hf",
    tiny_name="tiny",
    tiny_checkpoint=f"{_PKG}.tiny:tiny_checkpoint",
    tiny_builder=f"{_PKG}.tiny:build_tiny_llava_next",
    lmms_eval_model="vtcompress_llava_next",
    lmms_eval_class=f"{_PKG}.eval_model:CompressedLlavaNext",
    demo_views=f"{_PKG}.demo:anyres_views",
    docs_page="hosts/llava-next.md",
    vllm_architecture="VtcompressLlavaNextForConditionalGeneration",
    vllm_model="vtcompress.integrations.vllm.model:CompressedLlavaNextForConditionalGeneration",
)

_EXPORTS = {"LlavaNextHost": "host", "DEFAULT_MODEL": "loader", "load_compressed_llava": "loader"}


def __getattr__(name: str):
    return lazy_export(__name__, _EXPORTS, name)


__all__ = ["DEFAULT_MODEL", "HOST", "LlavaNextHost", "load_compressed_llava"]
