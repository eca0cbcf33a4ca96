"""Public entry points: compress(), compressed(), CompressionHandle."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Protocol

from torch import nn

from vtcompress.config import CompressionConfig
from vtcompress.registry import make_config
from vtcompress.stats import CompressionStats

_HANDLE_ATTR = "_vtcompress_handle"


class Adapter(Protocol):
    """Model-specific glue. ``supports`` recognises a model; ``attach`` installs removable hooks."""

    model_names: str  # for error messages, e.g. "LlavaNextForConditionalGeneration"

    @staticmethod
    def supports(model: nn.Module) -> bool: ...

    def __init__(self, model: nn.Module, config: CompressionConfig, handle: CompressionHandle) -> None: ...

    def remove(self) -> None: ...


_ADAPTERS: list[type] = []


def register_adapter(cls: type) -> type:
    """Class decorator: make ``compress()`` use ``cls`` for the models it ``supports``."""
    if cls not in _ADAPTERS:
        _ADAPTERS.append(cls)
    return cls


def _load_builtin_adapters() -> None:
    from vtcompress.integrations import llava_next  # noqa: F401

    with contextlib.suppress(ImportError):
        from vtcompress.integrations import docowl  # noqa: F401


def find_adapter(model: nn.Module) -> type:
    _load_builtin_adapters()
    for cls in _ADAPTERS:
        if cls.supports(model):
            return cls
    names = ", ".join(a.model_names for a in _ADAPTERS)
    raise TypeError(
        f"vtcompress has no adapter for {type(model).__name__}; supported: {names}. "
        "Load the model with e.g. LlavaNextForConditionalGeneration.from_pretrained(...) or "
        "vtcompress.load_compressed_llava(...)."
    )


class CompressionHandle:
    """A live compression of one model. ``remove()`` restores the model exactly (idempotent)."""

    def __init__(self, model: nn.Module, config: CompressionConfig) -> None:
        self.model = model
        self.config = config
        self.last_stats: CompressionStats | None = None
        self._adapter: Any = None

    @property
    def active(self) -> bool:
        return self._adapter is not None

    def remove(self) -> None:
        if self._adapter is not None:
            self._adapter.remove()
            self._adapter = None
        if getattr(self.model, _HANDLE_ATTR, None) is self:
            delattr(self.model, _HANDLE_ATTR)

    def __repr__(self) -> str:
        state = "active" if self.active else "removed"
        return f"CompressionHandle({type(self.model).__name__}, {self.config}, {state})"


def compress(
    model: nn.Module, config_or_name: CompressionConfig | str = "globalcom2", **kwargs: Any
) -> CompressionHandle:
    """Compress ``model``'s visual tokens from now on; returns a removable handle.

    ``config_or_name`` is a method name from :func:`vtcompress.available_methods` (with options
    as keyword arguments, e.g. ``ratio=0.25``) or a config instance; options given as keyword
    arguments win over a config's own values, on a copy (the passed config is never changed).
    Compressing an already compressed model replaces the previous compression; it never stacks.
    """
    config = make_config(config_or_name, **kwargs)
    return _attach(CompressionHandle(model, config))


def _attach(handle: CompressionHandle) -> CompressionHandle:
    adapter_cls = find_adapter(handle.model)
    previous = getattr(handle.model, _HANDLE_ATTR, None)
    if previous is not None:
        previous.remove()
    handle._adapter = adapter_cls(handle.model, handle.config, handle)
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
