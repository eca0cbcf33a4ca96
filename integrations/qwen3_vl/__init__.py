"""Qwen3-VL (Hugging Face transformers): host (DeepStack included), layout, loader, tiny offline model.

:data:`HOST` declares the family (``vtcompress.hosts`` entry point); importing this package
imports neither transformers nor the host.
"""

from vtcompress.hosts import HostSpec, lazy_export

_PKG = __name__

MAX_ASPECT_RATIO = 200  # the processor's smart_resize refuses a longer side over 200 times the shorter one

HOST = HostSpec(
    name="qwen3_vl",
    display_name="Qwen3-VL",
    host=f"{_PKG}.host:Qwen3VLHost",
    model_classes=("Qwen3VLForConditionalGeneration",),
    model_types=("qwen3_vl",),
    loader=f"{_PKG}.loader:load_compressed_qwen3_vl",
    loader_alias="load_compressed_qwen3_vl",
    load_uncompressed=f"{_PKG}.loader:load_qwen3_vl",
    default_method="uniform",  # no [CLS], no thumbnail: globalcom2 is not served
    hub_example="Qwen/Qwen3-VL-8B-Instruct",
    tiny_name="tiny-qwen3-vl",
    tiny_checkpoint=f"{_PKG}.tiny:tiny_checkpoint",
    tiny_builder=f"{_PKG}.tiny:build_tiny_qwen3_vl",
    max_aspect=MAX_ASPECT_RATIO,
    video_inputs=f"{_PKG}.video_inputs:video_inputs",
    video_frames=32,  # as the other Qwen family's (lmms-eval's default)
    lmms_eval_model="vtcompress_qwen3_vl",
    lmms_eval_class=f"{_PKG}.eval_model:CompressedQwen3VL",
    demo_views="vtcompress.integrations.mrope_demo:merged_views",
    name_defaults={"pitome": {"metric": "projected"}, "tome": {"metric": "projected"}},
    docs_page="hosts/qwen3-vl.md",
    vllm_architecture="VtcompressQwen3VLForConditionalGeneration",
    vllm_model="vtcompress.integrations.vllm.qwen3_vl:CompressedQwen3VLForConditionalGeneration",
)

_EXPORTS = {
    "ImageOnlyQwen3VLProcessor": "processing",
    "Qwen3VLHost": "host",
    "Qwen3VLLayout": "layout",
    "load_compressed_qwen3_vl": "loader",
    "merged_grid": "processing",
}


def __getattr__(name: str):
    return lazy_export(__name__, _EXPORTS, name)


__all__ = [
    "HOST",
    "ImageOnlyQwen3VLProcessor",
    "Qwen3VLHost",
    "Qwen3VLLayout",
    "load_compressed_qwen3_vl",
    "merged_grid",
]
