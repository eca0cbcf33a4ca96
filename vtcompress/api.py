"""Public entry points: compress(), compressed(), CompressionHandle."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Protocol

from torch import nn

from vtcompress.config import CompressionConfig
from vtcompress.hosts import host_specs
from vtcompress.registry import make_config
from vtcompress.stats import CompressionStats

_HANDLE_ATTR = "_vtcompress_handle"
_HOSTS: list[type] = []


class Host(Protocol):
    """A host: model-specific glue (see :class:`vtcompress.integrations.host.Host`).

    ``supports`` recognises a model; the constructor installs removable hooks; ``remove`` undoes them.
    """

    model_names: str  # for error messages, e.g. "LlavaNextForConditionalGeneration"
    # Optional: method name -> options that name gets on this host unless the caller sets them
    # (see :func:`host_config`).
    # name_defaults: dict[str, dict[str, Any]]

    @staticmethod
    def supports(model: nn.Module) -> bool: ...

    def __init__(self, model: nn.Module, config: CompressionConfig, handle: CompressionHandle) -> None: ...

    def remove(self) -> None: ...


def register_host(cls: type) -> type:
    """Make ``compress()`` use host ``cls`` for the models it ``supports`` (also a class decorator).

    Packages normally declare hosts in the ``vtcompress.hosts`` entry-point group instead.
    """
    if cls not in _HOSTS:
        _HOSTS.append(cls)
    return cls


register_adapter = register_host  # the former name


def find_host(model: nn.Module) -> type:
    """The host that supports ``model``: registered at run time first, then the declared families
    (:func:`vtcompress.hosts.host_specs`) whose ``model_classes`` name its class."""
    for cls in _HOSTS:
        if cls.supports(model):
            return cls
    specs = [s for s in host_specs() if s.may_serve(type(model))]
    for spec in specs:
        cls = spec.host_class()
        if cls not in _HOSTS and cls.supports(model):
            return cls
    names = [getattr(cls, "model_names", cls.__name__) for cls in _HOSTS]
    names += [", ".join(s.model_classes) or s.display_name for s in host_specs()]
    example = next((s for s in host_specs() if s.model_classes and s.loader_alias), None)
    hint = (
        f" Load the model with e.g. {example.model_classes[0]}.from_pretrained(...) or "
        f"vtcompress.{example.loader_alias}(...)."
        if example
        else ""
    )
    raise TypeError(
        f"vtcompress has no host for {type(model).__name__}; supported: {'; '.join(names) or 'none installed'}."
        + hint
    )


class CompressionHandle:
    """A live compression of one model. ``remove()`` restores the model exactly (idempotent)."""

    def __init__(self, model: nn.Module, config: CompressionConfig) -> None:
        self.model = model
        self.config = config
        self.last_stats: CompressionStats | None = None
        self._host: Any = None

    @property
    def active(self) -> bool:
        return self._host is not None

    def remove(self) -> None:
        if self._host is not None:
            self._host.remove()
            self._host = None
        if getattr(self.model, _HANDLE_ATTR, None) is self:
            delattr(self.model, _HANDLE_ATTR)

    def __repr__(self) -> str:
        state = "active" if self.active else "removed"
        return f"CompressionHandle({type(self.model).__name__}, {self.config}, {state})"


def host_config(host: type, config_or_name: CompressionConfig | str, **options: Any) -> CompressionConfig:
    """The config ``config_or_name`` means on ``host``.

    Options given here win; a method NAME then gets the host's ``name_defaults`` for it (the
    settings that work on that model, e.g. ``metric="projected"`` on a tower without hidden
    states in token order), then its config class's defaults. A config instance is used as given
    (plus ``options``, on a copy): a host never changes a config it was handed.
    """
    if isinstance(config_or_name, str):
        defaults = getattr(host, "name_defaults", {}).get(config_or_name, {})
        options = {**defaults, **{k: v for k, v in options.items() if not (k == "ratio" and v is None)}}
    return make_config(config_or_name, **options)


def config_for(
    model: nn.Module, config_or_name: CompressionConfig | str, **options: Any
) -> CompressionConfig:
    """The config :func:`compress` would use for ``model``: :func:`host_config` with its host."""
    return host_config(find_host(model), config_or_name, **options)


def compress(
    model: nn.Module, config_or_name: CompressionConfig | str = "globalcom2", **kwargs: Any
) -> CompressionHandle:
    """Compress ``model``'s visual tokens from now on; returns a removable handle.

    ``config_or_name`` is a method name from :func:`vtcompress.available_methods` (with options
    as keyword arguments, e.g. ``ratio=0.25``) or a config instance; options given as keyword
    arguments win over a config's own values, on a copy (the passed config is never changed).
    A method name gets the host's defaults for it where the host has some (see
    :func:`host_config`; ``handle.config`` is the config in use).
    Compressing an already compressed model replaces the previous compression; it never stacks.
    """
    return _attach(CompressionHandle(model, config_for(model, config_or_name, **kwargs)))


def _attach(handle: CompressionHandle) -> CompressionHandle:
    host_cls = find_host(handle.model)
    previous = getattr(handle.model, _HANDLE_ATTR, None)
    if previous is not None:
        previous.remove()
    handle._host = host_cls(handle.model, handle.config, handle)
    setattr(handle.model, _HANDLE_ATTR, handle)
    return handle


def get_handle(model: nn.Module) -> CompressionHandle | None:
    """The active handle of ``model``, if it is compressed."""
    return getattr(model, _HANDLE_ATTR, None)


@contextlib.contextmanager
def compressed(
    model: nn.Module, config_or_name: CompressionConfig | str = "globalcom2", **kwargs: Any
) -> Iterator[CompressionHandle]:
    """``with compressed(model, "tokencorr", ratio=0.3) as handle: ...`` -- removed on exit.

    A compression that was active before the block is restored afterwards.
    """
    previous = get_handle(model)
    handle = compress(model, config_or_name, **kwargs)
    try:
        yield handle
    finally:
        handle.remove()
        if previous is not None:
            _attach(previous)
