"""What every family's ``load_compressed_*`` does, once: resolve the config before any weights
load (refusing what the host cannot serve), load the checkpoint with the family's uncompressed
loader (``HostSpec.load_uncompressed``), then compress it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from vtcompress.api import compress, host_config
from vtcompress.config import CompressionConfig
from vtcompress.hosts import HostSpec
from vtcompress.registry import explicit_options

TINY = "tiny"
HUB_KWARGS = ("local_files_only", "revision", "token")


def hub_kwargs(from_pretrained_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The ``from_pretrained`` options that a processor's ``from_pretrained`` takes too."""
    return {k: v for k, v in from_pretrained_kwargs.items() if k in HUB_KWARGS}


def resolve_model_path(spec: HostSpec, model: str | os.PathLike) -> str:
    """``"tiny"`` -> the family's offline tiny model (built and saved on first use); else unchanged."""
    if str(model) == TINY:
        return spec.load("tiny_checkpoint")()
    return str(model)


def load_and_compress(
    spec: HostSpec,
    model: str | os.PathLike,
    method: str | CompressionConfig,
    ratio: float | None,
    method_options: dict[str, Any] | None,
    from_pretrained_kwargs: Mapping[str, Any],
    *,
    tower_depth: int | None = None,
):
    """``(model, processor)`` of ``model`` (hub id, local path or ``"tiny"``), compressed by the
    config that ``method`` / ``ratio`` / ``method_options`` give on ``spec``'s host.

    ``tower_depth``: the published checkpoints' vision depth, for hosts whose refusals must be
    checked before loading (the real depth is known only after). An OSError from loading comes
    back with the family's name and what to pass instead.
    """
    from vtcompress.integrations.host import check_served
    from vtcompress.integrations.tiny_models import loading_bars

    host = spec.host_class()
    # Fails before loading; a method name gets the host's defaults (``HostSpec.name_defaults``).
    config = host_config(host, method, **explicit_options(ratio, method_options))
    if tower_depth is not None:
        check_served(host, config, tower_depth - 1, tower_depth)
    path = resolve_model_path(spec, model)
    try:
        with loading_bars(path):
            loaded, processor = spec.load("load_uncompressed")(path, **from_pretrained_kwargs)
    except OSError as err:
        raise OSError(
            f"could not load {spec.display_name} weights from {path!r}: {err}\n"
            "Give a local directory or a hub id reachable from here, or model='tiny' for the offline tiny model."
        ) from err
    compress(loaded, config)
    return loaded, processor
