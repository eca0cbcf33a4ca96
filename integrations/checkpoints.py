"""An uncompressed checkpoint of any declared family, for the apps (``vtcompress run``, the demo).

The apps compress and uncompress one loaded model per request, so they load it plainly and let
:func:`vtcompress.compress` find its host. The family is the declaration
(:class:`~vtcompress.hosts.HostSpec`) whose ``model_types`` hold the checkpoint's ``model_type``;
offline tiny models (random weights, built on first use) have names of their own (``tiny_name``).
Families that declare no ``load_uncompressed`` are not loaded here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from vtcompress.hosts import HostSpec, host_spec, loadable_specs, spec_for_model_type


class CheckpointError(OSError):
    """Files that are not a loadable checkpoint of a declared family; ``str(err)`` is one line
    naming the fix."""


@dataclass
class Checkpoint:
    """A loaded, uncompressed checkpoint. ``random_weights``: an offline tiny model."""

    model: Any
    processor: Any
    family: str  # the declaring HostSpec's name
    random_weights: bool
    from_cache: bool = False  # a hub id loaded from the local cache: the hub was not reachable

    @property
    def spec(self) -> HostSpec:
        return host_spec(self.family)

    @property
    def family_name(self) -> str:
        return self.spec.display_name

    @property
    def max_aspect(self) -> tuple[str, float] | None:
        """``(family name, limit)`` where the processor refuses long images, else None."""
        return aspect_limit(self.family)


def default_method(family: str) -> str:
    """The method a family uses when none is named."""
    return host_spec(family).default_method


def hub_example(family: str) -> str:
    """A published checkpoint of the family, for messages that name one."""
    return host_spec(family).hub_example or "a hub id"


def aspect_limit(family: str) -> tuple[str, float] | None:
    """``(family name, limit)``: the longest side over the shortest the family's processor
    accepts; None where any aspect ratio is served."""
    spec = host_spec(family)
    return None if spec.max_aspect is None else (spec.display_name, spec.max_aspect)


def locate(name: str | os.PathLike) -> tuple[str, dict[str, Any]]:
    """``(path_or_hub_id, from_pretrained_kwargs)`` for ``name``: a tiny model's name (built
    and cached on first use), a local directory or a hub id. Raises
    :class:`~vtcompress.integrations.locate.ModelNotFoundError` (one line naming the fix) for
    what cannot be loaded from here."""
    from vtcompress.integrations.locate import locate_checkpoint

    return locate_checkpoint(name)


def model_family(path: str, **kwargs: Any) -> HostSpec:
    """The family of the checkpoint at ``path`` (by its config's ``model_type``); ValueError
    naming the families the apps load otherwise."""
    from transformers import PretrainedConfig

    model_type = PretrainedConfig.get_config_dict(path, **kwargs)[0].get("model_type")
    spec = spec_for_model_type(model_type) if model_type else None
    if spec is None or spec.load_uncompressed is None:
        loadable = loadable_specs()
        raise ValueError(
            f"its config says model_type {model_type!r}; this loads {', '.join(s.display_name for s in loadable)} "
            f"checkpoints (model_type {', '.join(t for s in loadable for t in s.model_types)})"
        )
    return spec


def load_checkpoint(name: str | os.PathLike, dtype: torch.dtype = torch.float32) -> Checkpoint:
    """Load ``name`` (see :func:`locate`) uncompressed, in eval mode, on the CPU.

    Raises ModelNotFoundError from :func:`locate` and :class:`CheckpointError` when the files
    cannot be read or are not a checkpoint of a declared family (both one line).
    """
    path, kwargs = locate(name)
    try:
        return _load(path, kwargs, dtype)
    except (OSError, ValueError, KeyError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        from vtcompress.integrations.locate import hub_examples, tiny_names

        raise CheckpointError(
            f"could not load a checkpoint from {str(name)!r} ({first}); give one (e.g. "
            f"{hub_examples()}), a tiny model ({tiny_names()}) or leave --model out"
        ) from err


def _load(path: str, kwargs: dict[str, Any], dtype: torch.dtype) -> Checkpoint:
    from vtcompress.integrations.tiny_models import is_random_tiny

    spec = model_family(path, **kwargs)
    model, processor = spec.load("load_uncompressed")(path, dtype=dtype, **kwargs)
    random_weights = os.path.isdir(path) and is_random_tiny(path)
    from_cache = bool(kwargs.get("local_files_only"))
    return Checkpoint(model.eval(), processor, spec.name, random_weights, from_cache)
