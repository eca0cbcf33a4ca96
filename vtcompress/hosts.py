"""Model families: one :class:`HostSpec` per family, declared in its host folder and found through
the ``vtcompress.hosts`` entry-point group.

A declaration holds everything the apps (CLI, demo, lmms-eval, checkpoint loading,
``vtcompress.load_compressed_*``) need to know about a family, so that none of them names one.
Code is referenced as ``"module:attribute"`` strings and imported on first use: reading the
declarations imports neither transformers nor the family's host module (the CLI's ``--help``
stays fast). Declare a family in its folder's ``__init__.py`` (which must stay light)::

    HOST = HostSpec(
        name="my_family",                   # the entry-point name
        display_name="My-VLM",
        host="my_pkg.my_family.host:MyHost",
        model_classes=("MyVLMForConditionalGeneration",),
        model_types=("my_vlm",),
        ...
    )

and name it in ``pyproject.toml``: ``[project.entry-points."vtcompress.hosts"] my_family =
"my_pkg.my_family:HOST"``.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from types import MappingProxyType
from typing import Any

HOST_ENTRY_POINTS = "vtcompress.hosts"
CHAT_PROMPT = "vtcompress.integrations.prompt:chat_prompt"


class HostImportError(ImportError):
    """A declared host whose code cannot be imported; ``str(err)`` is one line naming it and the cause."""


@dataclass(frozen=True, eq=False)  # one object per family: compared by identity
class HostSpec:
    """What one model family is. Only ``name``, ``display_name`` and ``host`` are required; an app
    skips a family that lacks what it needs (e.g. the CLI needs ``load_uncompressed``).

    References (``str`` fields documented as "ref") are ``"module:attribute"``, imported by
    :meth:`load`.

    Attributes:
        name: the family's key, also its ``vtcompress.hosts`` entry-point name (``"llava_next"``).
        display_name: for people (``"LLaVA-NeXT"``).
        host: ref to the host class (:class:`vtcompress.api.Host`), or the class itself.
        model_classes: model class names the host serves; ``compress()`` imports the host only for
            these (empty: ask the host's ``supports`` for every model).
        model_types: ``config.model_type`` values of the family's checkpoints (checkpoint loading).
        loader: ref to ``load_compressed_*(model, method, ratio, method_options, **from_pretrained)
            -> (model, processor)``, compressed.
        loader_alias: the loader's name on the ``vtcompress`` package (``"load_compressed_llava"``).
        load_uncompressed: ref to ``(path, dtype=..., **from_pretrained_kwargs) -> (model,
            processor)``, uncompressed, in eval mode: what the CLI and the demo load.
        default_method: the method a name-less call uses on this family.
        hub_example: a published checkpoint, for defaults and messages.
        tiny_name: the name that selects the offline tiny model in the apps (``"tiny"``).
        tiny_checkpoint: ref to ``() -> str``, the saved tiny checkpoint's folder (built on first use).
        tiny_builder: ref to ``(seed=0) -> (model, processor)``, the tiny model in memory.
        prompt: ref to ``(processor, question, num_images=1) -> str``, the prompt around images.
        max_aspect: longest over shortest image side the processor accepts (None: any).
        video_inputs: ref to ``(model_config, processor, frames: list[PIL.Image], question,
            seconds_between) -> dict``, the model's inputs for one prompt about a clip (None: the
            apps take no videos for this family).
        video_frames: frames the apps sample from a video by default (the family's usual count).
        lmms_eval_model: the lmms-eval model id (``lmms-eval --model ID``).
        lmms_eval_class: ref to its lmms-eval model class.
        demo_views: ref to ``(engine, image, inputs) -> [(pixels [H, W, 3] uint8, (rows, cols),
            valid [rows, cols] bool | None)]``: what the tower saw per view of the first image.
        name_defaults: method name -> options that name gets on this family unless the caller
            sets them (see :func:`vtcompress.api.host_config`).
        docs_page: the family's page under ``docs/`` (``"hosts/llava-next.md"``).
        vllm_architecture: the architecture name the vLLM plugin registers for the family.
        vllm_model: ref to its vLLM model class (imported by vLLM, lazily).
    """

    name: str
    display_name: str
    host: str | type
    model_classes: tuple[str, ...] = ()
    model_types: tuple[str, ...] = ()
    loader: str | None = None
    loader_alias: str | None = None
    load_uncompressed: str | None = None
    default_method: str = "globalcom2"
    hub_example: str | None = None
    tiny_name: str | None = None
    tiny_checkpoint: str | None = None
    tiny_builder: str | None = None
    prompt: str = CHAT_PROMPT
    max_aspect: float | None = None
    video_inputs: str | None = None
    video_frames: int = 32
    lmms_eval_model: str | None = None
    lmms_eval_class: str | None = None
    demo_views: str | None = None
    name_defaults: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    docs_page: str | None = None
    vllm_architecture: str | None = None
    vllm_model: str | None = None

    def __post_init__(self) -> None:
        frozen = {k: MappingProxyType(dict(v)) for k, v in self.name_defaults.items()}
        object.__setattr__(self, "name_defaults", MappingProxyType(frozen))

    def load(self, what: str) -> Any:
        """The object field ``what`` refers to, imported now; HostImportError (one line) if it
        cannot be imported, ValueError if the family declares none."""
        ref = getattr(self, what)
        if ref is None:
            raise ValueError(f"the {self.display_name} host declares no {what}")
        if not isinstance(ref, str):
            return ref
        module, _, attr = ref.partition(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as err:
            raise HostImportError(
                f"vtcompress host {self.name!r} cannot import its {what} {ref}: {err}"
            ) from err

    def host_class(self) -> type:
        return self.load("host")

    def may_serve(self, model_class: type) -> bool:
        """Whether ``model_class`` or a base of it is named in ``model_classes`` (always true
        without a list); the host's ``supports`` decides."""
        return not self.model_classes or any(c.__name__ in self.model_classes for c in model_class.__mro__)


def _as_spec(name: str, obj: Any) -> HostSpec:
    """An entry point's object: a declaration, or a bare host class (the older form of the group)."""
    if isinstance(obj, HostSpec):
        return obj
    if isinstance(obj, type):
        return HostSpec(name=name, display_name=getattr(obj, "model_names", name), host=obj)
    raise TypeError(
        f"the vtcompress.hosts entry point {name!r} names {obj!r}, not a HostSpec or a host class"
    )


@functools.lru_cache(maxsize=1)
def host_specs() -> tuple[HostSpec, ...]:
    """Every declared family, in entry-point name order. A declaration that cannot be imported
    raises HostImportError naming it: a registered host is never silently missing."""
    specs = []
    for ep in sorted(entry_points(group=HOST_ENTRY_POINTS), key=lambda ep: ep.name):
        try:
            obj = ep.load()
        except ImportError as err:
            raise HostImportError(
                f"vtcompress host {ep.name!r} ({ep.value}) cannot be imported: {err}"
            ) from err
        specs.append(_as_spec(ep.name, obj))
    return tuple(specs)


def host_spec(name: str) -> HostSpec:
    """The family named ``name``; ValueError naming the declared ones otherwise."""
    for spec in host_specs():
        if spec.name == name:
            return spec
    known = ", ".join(s.name for s in host_specs()) or "none"
    raise ValueError(f"no vtcompress host {name!r} is declared; declared: {known}")


def spec_for_model_type(model_type: str) -> HostSpec | None:
    """The family whose checkpoints have ``config.model_type == model_type``, if any."""
    return next((s for s in host_specs() if model_type in s.model_types), None)


def spec_for_tiny(name: str) -> HostSpec | None:
    """The family whose offline tiny model is called ``name``, if any."""
    return next((s for s in host_specs() if s.tiny_name is not None and s.tiny_name == name), None)


def loadable_specs() -> tuple[HostSpec, ...]:
    """The families the apps load from a checkpoint (those declaring ``load_uncompressed``)."""
    return tuple(s for s in host_specs() if s.load_uncompressed is not None)


def lazy_export(package: str, exports: Mapping[str, str], name: str) -> Any:
    """A host package's module ``__getattr__``: ``exports`` maps a public name to the submodule
    that defines it, imported on first access (the package itself stays light for discovery)."""
    if name not in exports:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
