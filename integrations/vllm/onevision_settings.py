"""vtcompress settings of a vLLM-served LLaVA-OneVision: checks and placeholder counts for images
and clips. Nothing here imports vLLM.

Settings come from the same places as on LLaVA-NeXT (:mod:`vtcompress.integrations.vllm.settings`:
``--hf-overrides`` for the server, ``mm_processor_kwargs`` per request). A method name gets the
OneVision host's defaults for it (``name_defaults``: e.g. GlobalCom²'s ``score="mean_cos"``, as
SigLIP has no [CLS]). vLLM must know each item's placeholder count before the model runs, so only
configs whose count is static are accepted:

* an image keeps ``config.kept_count(layout)`` of the LM's tokens (the exact-budget rule,
  ``floor(ratio * N)``, for the methods here) plus its newlines (``config.newline_policy``), the
  layout being the one the transformers host compresses
  (:class:`~vtcompress.integrations.llava_onevision.layout.OneVisionLayout`);
* a clip keeps :func:`vtcompress.video.clip_kept_count` of its pooled frames plus the one newline
  OneVision appends to every video.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from vtcompress.api import host_config
from vtcompress.config import GLOBAL_VIEW, VIDEO, CompressionConfig
from vtcompress.integrations.host import score_layer_of
from vtcompress.integrations.llava_onevision import HOST as ONEVISION
from vtcompress.integrations.llava_onevision.layout import OneVisionLayout
from vtcompress.integrations.vllm import settings
from vtcompress.pipeline import check_applicable
from vtcompress.served import served_text
from vtcompress.video import VideoLayout, clip_kept_count

ASPECT = "anyres_max_9"  # the only one vLLM's OneVision implements (its counts hard-code 9)
VIDEO_NEWLINES = 1  # OneVision appends one image_newline to every video


class ServedOneVision:
    """The vLLM OneVision host as :mod:`vtcompress.served` reads a host: what it provides
    (the base view as a global view, videos; no [CLS], no in-LM pruning) and its name defaults."""

    model_names = "LLaVA-OneVision on vLLM"
    provides = frozenset({GLOBAL_VIEW, VIDEO})
    name_defaults = ONEVISION.name_defaults
    refusal_note = "SigLIP has no [CLS], and vLLM fixes each request's tokens before the model runs"


@dataclass(frozen=True)
class OneVisionGeometry:
    """What the settings need to know about the model's vision side (see :meth:`from_hf_config`)."""

    view_px: int
    patch_px: int
    pinpoints: tuple[tuple[int, int], ...]
    score_layer: int
    num_layers: int

    @classmethod
    def from_hf_config(cls, hf_config: Any) -> OneVisionGeometry:
        vision = hf_config.vision_config
        layer = hf_config.vision_feature_layer
        if not isinstance(layer, int):
            raise ValueError("vtcompress supports OneVision checkpoints with one vision_feature_layer (int)")
        if hf_config.vision_feature_select_strategy != "full":
            raise ValueError("vtcompress supports OneVision with vision_feature_select_strategy='full'")
        aspect = getattr(hf_config, "vision_aspect_ratio", ASPECT)
        if aspect != ASPECT:
            raise ValueError(
                f"vLLM's LLaVA-OneVision implements vision_aspect_ratio={ASPECT!r}, got {aspect!r}"
            )
        num_layers = vision.num_hidden_layers
        return cls(
            view_px=vision.image_size,
            patch_px=vision.patch_size,
            pinpoints=tuple(tuple(p) for p in hf_config.image_grid_pinpoints),
            score_layer=score_layer_of(layer, num_layers),
            num_layers=num_layers,
        )

    @property
    def pooled_side(self) -> int:
        """Tokens a side of a video frame after OneVision's 2x2 pooling."""
        return math.ceil((self.view_px // self.patch_px) / 2)

    def image_layout(self, height: int, width: int) -> OneVisionLayout:
        return OneVisionLayout.for_image(
            (height, width), list(self.pinpoints), self.view_px, self.patch_px, ASPECT
        )

    def clip_layout(self, frames: int) -> VideoLayout:
        return VideoLayout(frames, (self.pooled_side, self.pooled_side))


def resolve(
    server: Mapping[str, Any], request: Any, geometry: OneVisionGeometry, *, where: str = settings.KEY
) -> CompressionConfig:
    """The config for one request: ``server`` settings changed by ``request``'s (None: none),
    with the OneVision host's defaults for the method. Raises a one-line ValueError naming the field."""
    options = settings.request_options(server, request, where)
    method = options.pop("method", ONEVISION.default_method)
    try:
        config = host_config(ServedOneVision, method, **options)
    except (TypeError, ValueError) as err:
        raise ValueError(f"invalid {where}: {err}") from None
    check_servable(config, geometry, where)
    return config


def check_servable(config: CompressionConfig, geometry: OneVisionGeometry, where: str = settings.KEY) -> None:
    """Refuse a config whose count vLLM cannot know in advance, or that needs what the host lacks."""
    dependence = config.content_dependence()
    if dependence:
        raise ValueError(
            f"invalid {where}: {config.method} with {dependence} keeps a number of tokens that depends on "
            "the content, and vLLM must know it before the model runs"
        )
    try:
        check_applicable(
            config,
            ServedOneVision.model_names,
            ServedOneVision.provides,
            geometry.score_layer,
            geometry.num_layers,
        )
    except ValueError as err:
        raise ValueError(
            f"invalid {where}: {err}; {ServedOneVision.model_names} serves {served_text(ServedOneVision)}"
        ) from None


def check_media(config: CompressionConfig, images: int, where: str = settings.KEY) -> None:
    """Refuse a video-only method on a request with images (a clip takes image and video methods)."""
    if images and not config.is_off and "image" not in config.media:
        raise ValueError(
            f"invalid {where}: method {config.method!r} compresses videos only and this request has "
            f"{images} image(s); send the images in a request with an image method (e.g. 'uniform')"
        )


def image_placeholder_count(config: CompressionConfig, layout: OneVisionLayout) -> int:
    """Tokens one image takes in the prompt: the kept visual tokens plus its newlines."""
    kept = config.kept_count(layout)
    if kept is None:
        raise ValueError(
            f"{config.method} with {config.content_dependence()}: the count depends on the content"
        )
    return kept + layout.num_newlines(config.newline_policy)


def clip_placeholder_count(config: CompressionConfig, layout: VideoLayout) -> int:
    """Tokens one clip takes in the prompt: its kept pooled tokens plus the video's newline."""
    kept = clip_kept_count(config, layout)
    if kept is None:
        raise ValueError(
            f"{config.method} with {config.content_dependence()}: the count depends on the content"
        )
    return kept + VIDEO_NEWLINES
