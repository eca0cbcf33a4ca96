"""LLaVA-OneVision (Hugging Face transformers): host, loader, tiny offline model.

:data:`HOST` declares the family (``vtcompress.hosts`` entry point); importing this package
imports neither transformers nor the host.
"""

from vtcompress.hosts import HostSpec, lazy_export

_PKG = __name__

HOST = HostSpec(
    name="llava_onevision",
    display_name="LLaVA-OneVision",
    host=f"{_PKG}.host:LlavaOnevisionHost",
    model_classes=("LlavaOnevisionForConditionalGeneration", "LlavaOnevisionModel"),
    model_types=("llava_onevision",),
    loader=f"{_PKG}.loader:load_compressed_onevision",
    loader_alias="load_compressed_onevision",
    load_uncompressed=f"{_PKG}.loader:load_onevision",
    default_method="globalcom2",
    hub_example="llava-hf/llava-onevision-qwen2-7b-ov-hf",
    tiny_name="tiny-onevision",
    tiny_checkpoint=f"{_PKG}.tiny:tiny_checkpoint",
    tiny_builder=f"{_PKG}.tiny:build_tiny_onevision",
    video_inputs=f"{_PKG}.video_inputs:video_inputs",
    video_frames=32,  # lmms-eval's default for the family
    lmms_eval_model="vtcompress_llava_onevision",
    lmms_eval_class=f"{_PKG}.eval_model:CompressedLlavaOnevision",
    demo_views=f"{_PKG}.demo:onevision_views",
    name_defaults={
        "globalcom2": {"score": "mean_cos"},  # GlobalCom²'s score for towers without [CLS]
        "pitome": {"metric": "projected"},
        "tome": {"metric": "projected"},
    },
    docs_page="hosts/llava-onevision.md",
    vllm_architecture="VtcompressLlavaOnevisionForConditionalGeneration",
    vllm_model="vtcompress.integrations.vllm.onevision:CompressedOnevisionForConditionalGeneration",
)

_EXPORTS = {"LlavaOnevisionHost": "host", "DEFAULT_MODEL": "loader", "load_compressed_onevision": "loader"}


def __getattr__(name: str):
    return lazy_export(__name__, _EXPORTS, name)


__all__ = ["DEFAULT_MODEL", "HOST", "LlavaOnevisionHost", "load_compressed_onevision"]
