"""vtcompress settings of a vLLM-served LLaVA-NeXT: where they come from, how they are checked,
and the placeholder count they imply. Nothing here imports vLLM.

Server settings live in the model config under ``"vtcompress"`` (``--hf-overrides``); a request
may override them with ``mm_processor_kwargs={"vtcompress": {...}}``. A request that names a
different method starts from that method's defaults; otherwise its options change the server's.
vLLM must know each image's placeholder count before the model runs, so only methods and modes
whose count is the exact-budget rule (docs/budget.md) are accepted.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from vtcompress.config import CLS_ATTENTION, GLOBAL_VIEW, HIDDEN_STATES, CompressionConfig
from vtcompress.integrations.llava_next.layout import AnyResLayout
from vtcompress.pipeline import check_applicable
from vtcompress.registry import make_config

KEY = "vtcompress"
HOST = "the vLLM LLaVA-NeXT host"
PROVIDES = frozenset({CLS_ATTENTION, HIDDEN_STATES, GLOBAL_VIEW})
OFF = {"method": "globalcom2", "ratio": 1.0}  # no "vtcompress" key: the stock model, exactly


@dataclass(frozen=True)
class VisionGeometry:
    """What the settings need to know about the model's vision side.

    score_layer: the vision layer that consumes the features (as in the transformers host);
    num_layers: the tower's full depth; depth: layers vLLM builds (it stops at the feature
    layer), so hidden states and q/k exist for layers ``0..depth``.
    """

    view_px: int
    patch_px: int
    pinpoints: tuple[tuple[int, int], ...]
    score_layer: int
    num_layers: int
    depth: int

    @classmethod
    def from_hf_config(cls, hf_config: Any) -> VisionGeometry:
        vision = hf_config.vision_config
        layer = hf_config.vision_feature_layer
        if not isinstance(layer, int):
            raise ValueError("vtcompress supports LLaVA-NeXT checkpoints with one vision_feature_layer (int)")
        if hf_config.vision_feature_select_strategy != "default":
            raise ValueError("vtcompress supports vision_feature_select_strategy='default' (CLS dropped)")
        num_layers = vision.num_hidden_layers
        depth = layer + num_layers + 1 if layer < 0 else layer  # vLLM's get_layer_index
        return cls(
            view_px=vision.image_size,
            patch_px=vision.patch_size,
            pinpoints=tuple(tuple(p) for p in hf_config.image_grid_pinpoints),
            score_layer=min(depth, num_layers - 1),
            num_layers=num_layers,
            depth=depth,
        )

    def layout(self, height: int, width: int) -> AnyResLayout:
        return AnyResLayout.for_image((height, width), self.pinpoints, self.view_px, self.patch_px)


def server_settings(hf_config: Any) -> dict[str, Any]:
    """The model config's ``vtcompress`` entry as a dict (compression off when absent)."""
    raw = getattr(hf_config, KEY, None)
    if raw is None:
        return dict(OFF)
    if not isinstance(raw, Mapping):
        raise ValueError(f'{KEY} must be a JSON object such as {{"method": "globalcom2", "ratio": 0.25}}')
    return dict(raw)


def resolve(
    server: Mapping[str, Any], request: Any, geometry: VisionGeometry, *, where: str = KEY
) -> CompressionConfig:
    """The config for one request: ``server`` settings changed by ``request``'s (None: none).

    Raises ValueError with a one-line message that names the field and says what is accepted.
    """
    options = request_options(server, request, where)
    method = options.pop("method", "globalcom2")
    try:
        config = make_config(method, **options)
    except (TypeError, ValueError) as err:
        raise ValueError(f"invalid {where}: {err}") from None
    check_servable(config, geometry, where)
    return config


def request_options(server: Mapping[str, Any], request: Any, where: str = KEY) -> dict[str, Any]:
    """The options of one request: ``server``'s changed by ``request``'s; a request naming another
    method starts from that method's defaults. ValueError when ``request`` is not a mapping."""
    if request is None:
        return dict(server)
    if not isinstance(request, Mapping):
        raise ValueError(f'{where} must be a JSON object such as {{"ratio": 0.25}}, got {request!r}')
    if "method" in request and request["method"] != server.get("method"):
        return dict(request)
    return {**server, **request}


def check_servable(config: CompressionConfig, geometry: VisionGeometry, where: str = KEY) -> None:
    """Refuse a config whose count vLLM cannot know in advance, or whose layers vLLM lacks."""
    dependence = config.content_dependence()
    if dependence:
        raise ValueError(
            f"invalid {where}: {config.method} with {dependence} keeps a number of tokens that depends on "
            "the image's content, and vLLM must know it before the model runs"
        )
    try:
        check_applicable(config, HOST, PROVIDES, geometry.score_layer, geometry.num_layers)
    except ValueError as err:
        raise ValueError(f"invalid {where}: {err}") from None
    qk, hidden = config.capture_layers(geometry.score_layer, geometry.num_layers)
    beyond = sorted(i for i in qk | hidden if i > geometry.depth)
    if beyond:
        raise ValueError(
            f"invalid {where}: method {config.method!r} reads vision layers {beyond}, but vLLM builds the "
            f"tower only up to layer {geometry.depth} (the feature layer); choose layers <= {geometry.depth}"
        )


def placeholder_count(config: CompressionConfig, layout: AnyResLayout) -> int:
    """Tokens one image takes in the prompt: the visual tokens the config keeps plus newlines
    (docs/budget.md). Only configs whose count is known in advance get here (:func:`check_servable`)."""
    kept = config.kept_count(layout)
    if kept is None:
        raise ValueError(
            f"{config.method} with {config.content_dependence()}: the count depends on the content"
        )
    return kept + layout.num_newlines(config.newline_policy)


def encode(config: CompressionConfig) -> torch.Tensor:
    """The config as a uint8 tensor (UTF-8 JSON), so that it travels with an image's tensors."""
    return torch.tensor(list(json.dumps(config.to_dict()).encode()), dtype=torch.uint8)


def decode(data: torch.Tensor) -> CompressionConfig:
    """Inverse of :func:`encode`."""
    options = json.loads(bytes(data.tolist()).decode())
    return make_config(options.pop("method"), **options)
