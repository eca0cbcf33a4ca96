"""An uncompressed checkpoint of any transformers host, for the apps (``vtcompress run``, the demo).

The apps compress and uncompress one loaded model per request, so they load it plainly and let
:func:`vtcompress.compress` find its host. The family comes from the checkpoint's
``model_type``; offline tiny models (random weights, built on first use) have names of their own.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import torch

FAMILIES = {
    "llava_next": "LLaVA-NeXT",
    "llava_onevision": "LLaVA-OneVision",
    "qwen2_5_vl": "Qwen2.5-VL",
}
"""``model_type`` -> the family's name, for every family the apps load."""

TINY_MODELS = {"tiny": "llava_next", "tiny-onevision": "llava_onevision", "tiny-qwen2.5-vl": "qwen2_5_vl"}
"""Names of the offline tiny models (random weights) -> their family."""

HUB_EXAMPLES = {
    "llava_next": "llava-hf/llava-v1.6-mistral-7b-hf",
    "llava_onevision": "llava-hf/llava-onevision-qwen2-7b-ov-hf",
    "qwen2_5_vl": "Qwen/Qwen2.5-VL-7B-Instruct",
}
"""A published checkpoint of each family, for messages that name one."""


class CheckpointError(OSError):
    """Files that are not a loadable checkpoint of a family in :data:`FAMILIES`; ``str(err)`` is
    one line naming the fix."""


@dataclass
class Checkpoint:
    """A loaded, uncompressed checkpoint. ``random_weights``: an offline tiny model."""

    model: Any
    processor: Any
    family: str  # a key of FAMILIES
    random_weights: bool
    from_cache: bool = False  # a hub id loaded from the local cache: the hub was not reachable

    @property
    def family_name(self) -> str:
        return FAMILIES[self.family]

    @property
    def max_aspect(self) -> tuple[str, float] | None:
        """``(family name, limit)`` where the processor refuses long images, else None."""
        return aspect_limit(self.family)


def _loader(family: str) -> ModuleType:
    """The family's loader module (``load_compressed_*``, ``DEFAULT_METHOD``, ``resolve_model_path``)."""
    return importlib.import_module(f"vtcompress.integrations.{family}.loader")


def default_method(family: str) -> str:
    """The method a family's loader uses when none is named."""
    return _loader(family).DEFAULT_METHOD


def aspect_limit(family: str) -> tuple[str, float] | None:
    """``(family name, limit)``: the longest side over the shortest the family's processor
    accepts; None where any aspect ratio is served."""
    if family == "qwen2_5_vl":
        from vtcompress.integrations.qwen2_5_vl.processing import MAX_ASPECT_RATIO

        return FAMILIES[family], MAX_ASPECT_RATIO
    return None


def locate(name: str | os.PathLike) -> tuple[str, dict[str, Any]]:
    """``(path_or_hub_id, from_pretrained_kwargs)`` for ``name``: a tiny model's name (built
    and cached on first use), a local directory or a hub id. Raises
    :class:`~vtcompress.integrations.llava_next.loader.ModelNotFoundError` (one line naming the
    fix) for what cannot be loaded from here."""
    from vtcompress.integrations.llava_next.loader import locate_checkpoint

    family = TINY_MODELS.get(str(name))
    if family is None:
        return locate_checkpoint(name)
    return _loader(family).resolve_model_path("tiny"), {}


def model_family(path: str, **kwargs: Any) -> str:
    """The family (a key of :data:`FAMILIES`) of the checkpoint at ``path``; ValueError naming
    the families otherwise."""
    from transformers import AutoConfig

    model_type = AutoConfig.from_pretrained(path, **kwargs).model_type
    if model_type not in FAMILIES:
        raise ValueError(
            f"its config says model_type {model_type!r}; this loads {', '.join(FAMILIES.values())} "
            f"checkpoints (model_type {', '.join(FAMILIES)})"
        )
    return model_type


def load_checkpoint(name: str | os.PathLike, dtype: torch.dtype = torch.float32) -> Checkpoint:
    """Load ``name`` (see :func:`locate`) uncompressed, in eval mode, on the CPU.

    Raises ModelNotFoundError from :func:`locate` and :class:`CheckpointError` when the files
    cannot be read or are not a checkpoint of a family in :data:`FAMILIES` (both one line).
    """
    from vtcompress.integrations.tiny_models import loading_bars

    path, kwargs = locate(name)
    try:
        with loading_bars(path):
            return _load(path, kwargs, dtype)
    except (OSError, ValueError, KeyError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"could not load a checkpoint from {str(name)!r} ({first}); give one (e.g. "
            f"{', '.join(HUB_EXAMPLES.values())}), a tiny model ({', '.join(TINY_MODELS)}) or leave --model out"
        ) from err


def _load(path: str, kwargs: dict[str, Any], dtype: torch.dtype) -> Checkpoint:
    from vtcompress.integrations.tiny_models import is_random_tiny

    family = model_family(path, **kwargs)
    if family == "llava_onevision":
        from vtcompress.integrations.llava_onevision.loader import load_onevision

        model, processor = load_onevision(path, dtype=dtype, **kwargs)
    elif family == "qwen2_5_vl":
        from transformers import Qwen2_5_VLForConditionalGeneration

        from vtcompress.integrations.qwen2_5_vl.processing import load_processor

        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(path, dtype=dtype, **kwargs)
        processor = load_processor(path, **kwargs)
    else:
        from transformers import AutoProcessor, LlavaNextForConditionalGeneration

        model = LlavaNextForConditionalGeneration.from_pretrained(path, dtype=dtype, **kwargs)
        processor = AutoProcessor.from_pretrained(path, **kwargs)
    random_weights = os.path.isdir(path) and is_random_tiny(path)
    from_cache = bool(kwargs.get("local_files_only"))
    return Checkpoint(model.eval(), processor, family, random_weights, from_cache)
