"""``load_compressed_llava``: a LLaVA-NeXT checkpoint and its processor, compressed, in one call."""

from __future__ import annotations

import os
import socket
from typing import Any
from urllib.parse import urlparse

from vtcompress.api import compress, host_config
from vtcompress.config import CompressionConfig
from vtcompress.registry import explicit_options

DEFAULT_MODEL = "llava-hf/llava-v1.6-vicuna-7b-hf"
DEFAULT_METHOD = "globalcom2"
TINY = "tiny"


def resolve_model_path(model: str | os.PathLike) -> str:
    """``"tiny"`` -> the offline tiny model (built and cached on first use); else unchanged."""
    if str(model) == TINY:
        from vtcompress.integrations.llava_next.tiny import default_tiny_path, save_tiny_llava_next
        from vtcompress.integrations.tiny_models import ensure_saved

        return ensure_saved(default_tiny_path(), save_tiny_llava_next)
    return str(model)


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
    tiny_hint = (
        "or leave --model out (model='tiny') for the offline tiny LLaVA-NeXT "
        "(tiny-onevision, tiny-qwen2.5-vl: the other families)"
    )
    if name == TINY:
        return resolve_model_path(name), {}
    path = os.path.expanduser(name)
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise ModelNotFoundError(
                f"{name!r} is a directory without config.json: give a LLaVA-NeXT checkpoint directory "
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
            f"llava-hf/llava-v1.6-mistral-7b-hf, {tiny_hint}"
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


def load_compressed_llava(
    model: str | os.PathLike = DEFAULT_MODEL,
    method: str | CompressionConfig = DEFAULT_METHOD,
    ratio: float | None = None,
    method_options: dict[str, Any] | None = None,
    **from_pretrained_kwargs: Any,
):
    """Load a LLaVA-NeXT checkpoint (hub id or local path; ``"tiny"`` for the offline tiny model)
    and compress it.

    Args:
        model: e.g. "llava-hf/llava-v1.6-mistral-7b-hf", a local directory, or "tiny".
        method: a name from ``vtcompress.available_methods()`` or a config instance.
        ratio: kept fraction of visual tokens, in (0, 1]. None (default): the config's own ratio
            (a passed config keeps its ratio; a method name gets its config's default, 0.25).
        method_options: other options of the method's config, e.g. ``{"allocation": "paper"}``.
            Options given here or as ``ratio`` win over a passed config's values (applied to a
            copy; the passed config is never changed).
        **from_pretrained_kwargs: passed to ``from_pretrained`` (``dtype``, ``device_map``, ...).
    Returns:
        ``(model, processor)``; ``vtcompress.get_handle(model)`` is the compression handle.
    """
    from transformers import AutoProcessor, LlavaNextForConditionalGeneration

    from vtcompress.integrations.llava_next.host import LlavaNextHost

    config = host_config(LlavaNextHost, method, **explicit_options(ratio, method_options))  # before loading
    path = resolve_model_path(model)
    try:
        llava = LlavaNextForConditionalGeneration.from_pretrained(path, **from_pretrained_kwargs)
    except OSError as err:
        raise OSError(
            f"could not load LLaVA-NeXT weights from {path!r}: {err}\n"
            "Give a local directory or a hub id reachable from here, or model='tiny' for the offline tiny model."
        ) from err
    processor = AutoProcessor.from_pretrained(path)
    llava.eval()
    compress(llava, config)
    return llava, processor
