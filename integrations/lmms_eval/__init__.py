"""lmms-eval plugin: compressed models as lmms-eval models, found through entry points.

After ``pip install "vtcompress[eval]"`` lmms-eval lists the models ``vtcompress_llava_next``,
``vtcompress_llava_onevision``, ``vtcompress_qwen2_5_vl`` (Qwen2.5-VL) and ``vtcompress_docowl`` (mPLUG-DocOwl1.5), and ``vtcompress_llava``
(the original LLaVA codebase, built on lmms-eval's own ``llava`` model; it needs the ``llava``
package, see docs/hosts/llava-package.md)::

    lmms-eval --model vtcompress_llava_next \
        --model_args pretrained=llava-hf/llava-v1.6-vicuna-7b-hf,method=globalcom2,ratio=0.25,batch_size=8 \
        --tasks gqa --log_samples --output_path results/

Registration is the ``lmms_eval.models`` entry point of this distribution, which names
:func:`model_manifests`. This module imports nothing from lmms-eval at import time, so
``import vtcompress`` never needs the extra; the model modules (:mod:`.model`,
:mod:`.llava_next_model`, :mod:`.llava_onevision_model`, :mod:`.qwen2_5_vl_model`, :mod:`.docowl_model`) do need it.
"""

from __future__ import annotations

LLAVA_NEXT_MODEL_ID = "vtcompress_llava_next"
LLAVA_NEXT_CLASS_PATH = "vtcompress.integrations.lmms_eval.llava_next_model.CompressedLlavaNext"
ONEVISION_MODEL_ID = "vtcompress_llava_onevision"
ONEVISION_CLASS_PATH = "vtcompress.integrations.lmms_eval.llava_onevision_model.CompressedLlavaOnevision"
DOCOWL_MODEL_ID = "vtcompress_docowl"
DOCOWL_CLASS_PATH = "vtcompress.integrations.lmms_eval.docowl_model.CompressedDocOwl"
QWEN2_5_VL_MODEL_ID = "vtcompress_qwen2_5_vl"
QWEN2_5_VL_CLASS_PATH = "vtcompress.integrations.lmms_eval.qwen2_5_vl_model.CompressedQwen2_5_VL"
LLAVA_PKG_MODEL_ID = "vtcompress_llava"
LLAVA_PKG_CLASS_PATH = "vtcompress.integrations.lmms_eval.llava_pkg_model.CompressedLlava"


def extra_hint() -> str:
    """What to install when lmms-eval is missing (right for a checkout and for a wheel)."""
    from vtcompress.hints import needs_extra

    return needs_extra("the lmms-eval plugin needs lmms-eval", "eval")


def model_manifests() -> list:
    """Entry-point payload: the lmms-eval model manifests this package provides."""
    try:
        from lmms_eval.models.registry_v2 import ModelManifest
    except ImportError as err:  # only lmms-eval calls this, but say what is missing if not
        raise ImportError(extra_hint()) from err
    return [
        ModelManifest(model_id=LLAVA_NEXT_MODEL_ID, simple_class_path=LLAVA_NEXT_CLASS_PATH),
        ModelManifest(model_id=ONEVISION_MODEL_ID, simple_class_path=ONEVISION_CLASS_PATH),
        ModelManifest(model_id=DOCOWL_MODEL_ID, simple_class_path=DOCOWL_CLASS_PATH),
        ModelManifest(model_id=QWEN2_5_VL_MODEL_ID, simple_class_path=QWEN2_5_VL_CLASS_PATH),
        ModelManifest(model_id=LLAVA_PKG_MODEL_ID, simple_class_path=LLAVA_PKG_CLASS_PATH),
    ]


__all__ = [
    "DOCOWL_CLASS_PATH",
    "DOCOWL_MODEL_ID",
    "LLAVA_NEXT_CLASS_PATH",
    "LLAVA_NEXT_MODEL_ID",
    "QWEN2_5_VL_CLASS_PATH",
    "QWEN2_5_VL_MODEL_ID",
    "LLAVA_PKG_CLASS_PATH",
    "LLAVA_PKG_MODEL_ID",
    "ONEVISION_CLASS_PATH",
    "ONEVISION_MODEL_ID",
    "extra_hint",
    "model_manifests",
]
