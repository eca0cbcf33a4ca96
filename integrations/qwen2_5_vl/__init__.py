"""Qwen2.5-VL (Hugging Face transformers): host, layout, loader, tiny offline model.

:data:`HOST` declares the family (``vtcompress.hosts`` entry point); importing this package
imports neither transformers nor the host.
"""

from vtcompress.hosts import HostSpec, lazy_export

_PKG = __name__

MAX_ASPECT_RATIO = 200  # the processor's smart_resize refuses a longer side over 200 times the shorter one

HOST = HostSpec(
    name="qwen2_5_vl",
    display_name="Qwen2.5-VL",
    host=f"{_PKG}.host:Qwen2_5_VLHost",
    model_classes=("Qwen2_5_VLForConditionalGeneration",),
    model_types=("qwen2_5_vl",),
    loader=f"{_PKG}.loader:load_compressed_qwen2_5_vl",
    loader_alias="load_compressed_qwen2_5_vl",
    load_uncompressed=f"{_PKG}.loader:load_qwen2_5_vl",
    default_method="uniform",  # no [CLS], no thumbnail: globalcom2 is not served
    hub_example="Qwen/Qwen2.5-VL-7B-Instruct",
    tiny_name="tiny-qwen2.5-vl",
    tiny_checkpoint=f"{_PKG}.tiny:tiny_checkpoint",
    tiny_builder=f"{_PKG}.tiny:build_tiny_qwen2_5_vl",
    max_aspect=MAX_ASPECT_RATIO,
    video_inputs=f"{_PKG}.video_inputs:video_inputs",
    video_frames=32,  # lmms-eval's default for the family
    lmms_eval_model="vtcompress_qwen2_5_vl",
    lmms_eval_class=f"{_PKG}.eval_model:CompressedQwen2_5_VL",
    demo_views="vtcompress.integrations.mrope_demo:merged_views",
    name_defaults={"pitome": {"metric": "projected"}, "tome": {"metric": "projected"}},
    docs_page="hosts/qwen2-5-vl.md",
    vllm_architecture="VtcompressQwen2_5_VLForConditionalGeneration",
    vllm_model="vtcompress.integrations.vllm.qwen2_5_vl:CompressedQwen2_5_VLForConditionalGeneration",
)

_EXPORTS = {
    "ImageOnlyQwen2_5_VLProcessor": "processing",
    "Qwen2_5_VLHost": "host",
    "Qwen2_5_VLLayout": "layout",
    "load_compressed_qwen2_5_vl": "loader",
    "merged_grid": "processing",
}


def __getattr__(name: str):
    return lazy_export(__name__, _EXPORTS, name)


__all__ = [
    "HOST",
    "ImageOnlyQwen2_5_VLProcessor",
    "Qwen2_5_VLHost",
    "Qwen2_5_VLLayout",
    "load_compressed_qwen2_5_vl",
    "merged_grid",
]
