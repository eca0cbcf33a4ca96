"""lmms-eval plugin: compressed models as lmms-eval models, found through entry points.

After ``pip install "vtcompress[eval]"`` lmms-eval lists one model per declared family that names
an lmms-eval model (``HostSpec.lmms_eval_model``: ``vtcompress_llava_next``, ... see
:func:`model_ids`)::

    lmms-eval --model vtcompress_llava_next \
        --model_args pretrained=llava-hf/llava-v1.6-vicuna-7b-hf,method=globalcom2,ratio=0.25,batch_size=8 \
        --tasks gqa --log_samples --output_path results/

Registration is the ``lmms_eval.models`` entry point of this distribution, which names
:func:`model_manifests`. This module imports nothing from lmms-eval at import time, so
``import vtcompress`` never needs the extra; the model modules (:mod:`.model` and each family's
``eval_model``) do need it.
"""

from __future__ import annotations

from vtcompress.hosts import host_specs


def extra_hint() -> str:
    """What to install when lmms-eval is missing (right for a checkout and for a wheel)."""
    from vtcompress.hints import needs_extra

    return needs_extra("the lmms-eval plugin needs lmms-eval", "eval")


def model_classes() -> dict[str, str]:
    """lmms-eval model id -> dotted path of its class, for every declared family that has one."""
    return {
        s.lmms_eval_model: s.lmms_eval_class.replace(":", ".")
        for s in host_specs()
        if s.lmms_eval_model and isinstance(s.lmms_eval_class, str)
    }


def model_ids() -> list[str]:
    """The lmms-eval model ids this package provides."""
    return sorted(model_classes())


def model_manifests() -> list:
    """Entry-point payload: the lmms-eval model manifests this package provides."""
    try:
        from lmms_eval.models.registry_v2 import ModelManifest
    except ImportError as err:  # only lmms-eval calls this, but say what is missing if not
        raise ImportError(extra_hint()) from err
    return [ModelManifest(model_id=i, simple_class_path=path) for i, path in model_classes().items()]


__all__ = ["extra_hint", "model_classes", "model_ids", "model_manifests"]
