"""Where a checkpoint named by a user (a hub id, a local directory, an offline tiny model's name)
is loaded from, decided fast and before any download, with one-line errors naming the fix."""

from __future__ import annotations

import os
import socket
from typing import Any
from urllib.parse import urlparse

from vtcompress.hosts import host_specs, spec_for_tiny

DEFAULT_TINY = "tiny"
DEFAULT_VIDEO_TINY = "tiny-onevision"  # the default model of a video run (LLaVA-NeXT takes no videos)
"""The tiny model the apps load when no model is named."""


def tiny_names() -> str:
    """The offline tiny models' names with their families, for messages: "tiny (LLaVA-NeXT, the
    default), tiny-onevision (LLaVA-OneVision), ..."."""
    return ", ".join(
        f"{s.tiny_name} ({s.display_name}{', the default' if s.tiny_name == DEFAULT_TINY else ''})"
        for s in host_specs()
        if s.tiny_name
    )


def _or_list(names: list[str]) -> str:
    return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else "".join(names)


def loadable_families() -> str:
    """The families the apps load, for help texts: "LLaVA-NeXT, LLaVA-OneVision or Qwen2.5-VL"."""
    return _or_list([s.display_name for s in host_specs() if s.load_uncompressed]) or "no family"


def default_methods() -> str:
    """Each loadable family's default method, for help texts: "globalcom2 on LLaVA-NeXT, ..."."""
    by_method: dict[str, list[str]] = {}
    for s in host_specs():
        if s.load_uncompressed:
            by_method.setdefault(s.default_method, []).append(s.display_name)
    return ", ".join(f"{m} on {' and '.join(names)}" for m, names in by_method.items())


def hub_examples() -> str:
    """A published checkpoint of each family the apps load, for messages."""
    return ", ".join(s.hub_example for s in host_specs() if s.hub_example and s.load_uncompressed)


class ModelNotFoundError(OSError):
    """A ``--model`` that cannot be loaded from here; ``str(err)`` is one line naming the fix."""


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers a TCP connection within ``timeout`` seconds.

    A machine without network otherwise spends half a minute in transformers' retries before
    saying so. Behind an HTTPS proxy a direct connection says nothing: assume reachable.
    """
    if os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy"):
        return True
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def locate_checkpoint(model: str | os.PathLike) -> tuple[str, dict[str, Any]]:
    """Where to load ``model`` from, decided fast, before any download is tried.

    Returns ``(path_or_hub_id, from_pretrained_kwargs)``; the kwargs hold
    ``local_files_only=True`` when a hub id is cached and the hub cannot be reached.
    Raises :class:`ModelNotFoundError` (one line naming the fix) for a local path that does not
    exist, a directory without ``config.json``, or a hub id that is neither cached nor reachable.
    """
    from huggingface_hub import constants, try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    name = str(model)
    tiny_hint = f"or leave --model out (model={DEFAULT_TINY!r}) for an offline tiny model ({tiny_names()})"
    tiny = spec_for_tiny(name)
    if tiny is not None:
        return tiny.load("tiny_checkpoint")(), {}
    path = os.path.expanduser(name)
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise ModelNotFoundError(
                f"{name!r} is a directory without config.json: give a checkpoint directory "
                f"(config.json, weights, processor files), {tiny_hint}"
            )
        return path, {}
    if os.path.exists(path):
        raise ModelNotFoundError(f"{name!r} is a file: give a checkpoint directory or a hub id, {tiny_hint}")
    try:
        validate_repo_id(name)
        looks_like_path = name.startswith((".", "~", os.sep)) or name.count("/") != 1
    except HFValidationError:
        looks_like_path = True
    if looks_like_path:
        raise ModelNotFoundError(
            f"no model directory at {name!r}: give an existing checkpoint directory, a hub id such as "
            f"{hub_examples()}, {tiny_hint}"
        )
    cached = isinstance(try_to_load_from_cache(name, "config.json"), str)
    if constants.HF_HUB_OFFLINE:
        if cached:
            return name, {}
        raise ModelNotFoundError(
            f"{name!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set: download it "
            f"where the hub is reachable (hf download {name}), give a local directory, {tiny_hint}"
        )
    if _hub_reachable():
        return name, {}
    if cached:
        return name, {"local_files_only": True}
    raise ModelNotFoundError(
        f"cannot reach {constants.ENDPOINT} to download {name!r} (not in the local cache): download it "
        f"where the hub is reachable (hf download {name}), give a local directory, {tiny_hint}"
    )
