"""Method registry: a method is one module that calls :func:`register_method` when imported.

Methods are declared in the ``vtcompress.methods`` entry-point group of their distribution, the
built-in ones in vtcompress's own ``pyproject.toml``, so an installed package adds a method
without any edit here::

    [project.entry-points."vtcompress.methods"]
    mymethod = "my_package.my_method"   # method name = the module that registers it

Discovery is lazy: :func:`available_methods` reads the names from the installed metadata
without importing anything, and a method's module is imported the first time its name is
looked up (:func:`get_method`). A module that fails to import, or does not register the name
it is declared under, raises one line naming its package. Methods registered at run time
(``register_method`` in a notebook or a test) join the declared ones. This module imports no
method.
"""

from __future__ import annotations

import functools
import importlib.metadata
import re
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields, replace
from typing import Any, Union, get_args, get_origin, get_type_hints

from vtcompress import shadowing  # noqa: F401  (refuses a folder named vtcompress hiding the package)
from vtcompress.config import CompressionConfig

METHOD_ENTRY_POINTS = "vtcompress.methods"
_METHODS: dict[str, MethodSpec] = {}
_LOADED: set[str] = set()  # declared names whose module was imported


@dataclass(frozen=True)
class MethodSpec:
    """What the registry knows of a method.

    ``compress`` is the pure tensor function ``(ImageTokens, config) -> list[ViewOutput]``
    (see :mod:`vtcompress.tokens`). What the method needs from a host (attention, hidden states,
    in-tower merging, ...) its config says in ``requirements``; hosts check it.

    ``compress_batch`` (optional, see :func:`register_batch`) compresses every image of a batch
    that shares one layout at once: ``(list[ImageTokens], config) -> SelectedBatch | None``
    (:mod:`vtcompress.batch`), None where that config or layout takes the per-image path. Its
    results are the same as ``compress``'s, image by image.
    """

    name: str
    config_cls: type[CompressionConfig]
    compress: Callable[..., Any] | None
    description: str = ""
    compress_batch: Callable[..., Any] | None = None


def register_method(
    name: str,
    config_cls: type[CompressionConfig],
    description: str = "",
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering ``fn`` as the compressor of method ``name``."""

    def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in _METHODS and _METHODS[name].compress is not fn:
            raise ValueError(f"method {name!r} is already registered")
        owner = config_cls.__dict__.get("method")
        if owner and owner != name:
            raise ValueError(
                f"{config_cls.__name__} already configures method {owner!r}; subclass it for {name!r}"
            )
        config_cls.method = name
        batch = _METHODS[name].compress_batch if name in _METHODS else None
        _METHODS[name] = MethodSpec(name, config_cls, fn, description, batch)
        return fn

    return decorator


def register_batch(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering ``fn`` as the batched path of the registered method ``name``."""

    def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name not in _METHODS:  # not get_method: registering must not scan the entry points
            raise ValueError(f"register method {name!r} before its batched path")
        spec = _METHODS[name]
        if spec.compress_batch is not None and spec.compress_batch is not fn:
            raise ValueError(f"method {name!r} already has a batched path")
        _METHODS[name] = replace(spec, compress_batch=fn)
        return fn

    return decorator


@functools.lru_cache(maxsize=1)
def declared_methods() -> dict[str, importlib.metadata.EntryPoint]:
    """Method name -> its entry point, from the installed distributions' metadata (read once).

    Raises ImportError naming both packages when two distributions declare one name.
    """
    found: dict[str, importlib.metadata.EntryPoint] = {}
    for ep in importlib.metadata.entry_points(group=METHOD_ENTRY_POINTS):
        other = found.get(ep.name)
        if other is not None and other.value != ep.value:
            raise ImportError(
                f"method {ep.name!r} is declared by two packages ({_package(other)}: {other.value}; "
                f"{_package(ep)}: {ep.value}); uninstall one of them"
            )
        found[ep.name] = ep
    return found


def _package(ep: importlib.metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return dist.name if dist is not None else "an unknown package"


def _load(name: str) -> None:
    """Import the module declared for method ``name`` (once); nothing when it is not declared."""
    ep = declared_methods().get(name)
    if ep is None or name in _LOADED:
        return
    _LOADED.add(name)
    try:
        ep.load()
    except Exception as err:  # a broken third-party module: one line that names its package
        _LOADED.discard(name)
        first = str(err).splitlines()[0] if str(err) else ""
        raise ImportError(
            f"method {name!r} of package {_package(ep)} failed to load ({ep.value}): "
            f"{type(err).__name__}: {first}"
        ) from None
    if name not in _METHODS:
        raise ImportError(
            f"package {_package(ep)} declares method {name!r} ({ep.value}), but that module registers "
            f"no method of that name; fix its vtcompress.methods entry point"
        )


def available_methods(media: str | None = None) -> list[str]:
    """Names accepted by :func:`vtcompress.compress` and ``load_compressed_llava(method=...)``:
    the declared methods (entry points, not imported here) and those registered at run time. With
    ``media`` ("image" or "video"), only the methods that compress it (this imports them; image
    methods also compress videos, frame by frame)."""
    names = sorted({*declared_methods(), *_METHODS})
    if media is None:
        return names
    return [n for n in names if media == "video" or media in get_method(n).config_cls.media]


def get_method(name: str) -> MethodSpec:
    """The registered method ``name``, importing its declared module on first use."""
    _load(name)
    if name not in _METHODS:
        raise ValueError(f"unknown method {name!r}; known methods: {', '.join(available_methods())}")
    return _METHODS[name]


def make_config(config_or_name: CompressionConfig | str, **kwargs: Any) -> CompressionConfig:
    """Turn ``"globalcom2", ratio=0.25`` or a config instance (plus overrides) into a config.

    Options given here win over the config's own values. A passed config is never changed: with
    options, a changed copy is returned. ``ratio=None`` means "the config's ratio": a config
    instance keeps its own, a method name gets its config class's default (0.25 for every
    built-in method).
    """
    if "ratio" in kwargs and kwargs["ratio"] is None:
        del kwargs["ratio"]
    if isinstance(config_or_name, CompressionConfig):
        _check_options(type(config_or_name), kwargs)
        return config_or_name.replace(**kwargs) if kwargs else config_or_name
    if not isinstance(config_or_name, str):
        raise TypeError(
            f"expected a method name or a CompressionConfig, got {type(config_or_name).__name__}; "
            f"known methods: {', '.join(available_methods())}"
        )
    spec = get_method(config_or_name)
    _check_options(spec.config_cls, kwargs)
    return spec.config_cls(**kwargs)


def explicit_options(ratio: float | None, method_options: dict[str, Any] | None) -> dict[str, Any]:
    """The options a loader's caller gave explicitly: ``method_options`` plus ``ratio`` unless None.

    Raises ValueError when the ratio is given twice (as ``ratio`` and in ``method_options``).
    """
    options = dict(method_options or {})
    if ratio is not None:
        if "ratio" in options:
            raise ValueError(
                f"ratio given twice: ratio={ratio!r} and method_options['ratio']={options['ratio']!r}; "
                "pass it once, as ratio="
            )
        options["ratio"] = ratio
    return options


def _check_options(config_cls: type[CompressionConfig], options: dict[str, Any]) -> None:
    known = {f.name for f in fields(config_cls)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(
            f"{config_cls.__name__} has no option(s) {', '.join(unknown)}; "
            f"its options are: {', '.join(sorted(known))}"
        )


# A comma or new line that starts the next KEY=VALUE pair (a value may itself hold commas).
_PAIR_SEPARATOR = re.compile(r"\s*[,\n]\s*(?=[A-Za-z_]\w*\s*=)|\n")
_TRUE, _FALSE, _NONE = ("true", "yes", "on", "1"), ("false", "no", "off", "0"), ("none", "null")


def parse_options(
    method: str, items: Iterable[str], reserved: dict[str, str] | None = None
) -> dict[str, Any]:
    """Typed options of ``method``'s config from ``KEY=VALUE`` texts (a command line, a form).

    An item may hold several pairs separated by commas or new lines (``"alpha=0.7, steps=2"``);
    a comma splits only where a ``KEY=`` follows. Each value is read as its field's type:
    ``int``, ``float``, ``bool`` (true/false, yes/no, on/off, 1/0), ``str``, and ``none`` where
    the field may be None. ``["metric=projected", "steps=2"]`` -> ``{"metric": "projected",
    "steps": 2}`` for pitome. ``reserved``: keys set elsewhere -> the message that says where.
    Raises ValueError (one line naming the fix) on a malformed item, an unknown or reserved
    option, a value of the wrong type or a key given twice; the values themselves are checked
    when the config is made.
    """
    config_cls = get_method(method).config_cls
    hints = get_type_hints(config_cls)
    reserved = reserved or {}
    known = {f.name for f in fields(config_cls)} - set(reserved)
    options: dict[str, Any] = {}
    pairs = [p for item in items for p in _PAIR_SEPARATOR.split(item.strip()) if p.strip()]
    for item in pairs:
        key, sep, text = item.partition("=")
        key, text = key.strip(), text.strip()
        if not sep or not key:
            raise ValueError(f"method option {item!r} is not KEY=VALUE (e.g. metric=projected)")
        if key in reserved:
            raise ValueError(f"{key} is not a method option here: {reserved[key]}")
        if key not in known:
            raise ValueError(f"{method} has no option {key!r}; its options are: {', '.join(sorted(known))}")
        if key in options:
            raise ValueError(f"method option {key!r} given twice; give it once")
        options[key] = _typed(method, key, hints[key], text)
    return options


def _typed(method: str, key: str, hint: Any, text: str) -> Any:
    """``text`` read as a value of type ``hint`` (``X`` or ``X | None``)."""
    args = get_args(hint) if get_origin(hint) in (Union, types.UnionType) else ()
    optional = type(None) in args
    kind = next((a for a in args if a is not type(None)), hint) if args else hint
    if optional and text.lower() in _NONE:
        return None
    none = " or none" if optional else ""
    if kind is bool:
        if text.lower() in _TRUE + _FALSE:
            return text.lower() in _TRUE
        raise ValueError(f"{method} option {key} is true or false{none}; got {text!r}")
    if kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            name = "a whole number" if kind is int else "a number"
            raise ValueError(f"{method} option {key} is {name}{none}; got {text!r}") from None
    return text
