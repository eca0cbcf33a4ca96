"""vtcompress settings of a vLLM-served M-RoPE family (Qwen2.5-VL, Qwen3-VL): which methods it
serves, how a request's settings are checked, and the placeholder count of each image and clip.
Nothing here imports vLLM.

Settings come from the same places as on LLaVA-NeXT (:mod:`vtcompress.integrations.vllm.settings`):
the model config's ``"vtcompress"`` entry (``--hf-overrides``), changed per request by
``mm_processor_kwargs={"vtcompress": {...}}``. One config applies to every image and clip of a
request: an image method compresses images, and clips frame by frame; a video method compresses
clips and refuses a request with images. vLLM must know every placeholder count before the model
runs: the count is the config's own (``kept_count`` of the image's grid, ``clip_kept_count`` of
the clip's layout), and a method whose count depends on the content is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from vtcompress.config import VIDEO, CompressionConfig
from vtcompress.integrations.mrope_host import MergedGridLayout
from vtcompress.integrations.vllm import settings
from vtcompress.integrations.vllm.settings import KEY
from vtcompress.pipeline import check_applicable
from vtcompress.registry import make_config
from vtcompress.video import VideoLayout, clip_frame_counts, clip_kept_count, splits_frames_by_content


@dataclass(frozen=True)
class MRopeFamily:
    """What vLLM serves of one family.

    display_name: for messages; name_defaults: the transformers host's per-name defaults (a
    method named in the settings gets them, as ``vtcompress.compress`` gives them);
    videos: whether clips are compressed (else a request with clips and compression on is
    refused); default_method: the method of settings that name none; frame_runs: every frame
    of a clip is its own placeholder run (Qwen3-VL), so a clip's method must declare its
    per-frame counts (:func:`vtcompress.video.clip_frame_counts`).
    """

    display_name: str
    name_defaults: Mapping[str, Mapping[str, Any]]
    videos: bool
    default_method: str = "uniform"
    frame_runs: bool = False

    @property
    def host(self) -> str:
        return f"the vLLM {self.display_name} host"

    @property
    def provides(self) -> frozenset[str]:
        # No [CLS], no global view, no vision hidden states in token order, and the language
        # model is vLLM's: in-language-model methods are not served either.
        return frozenset({VIDEO}) if self.videos else frozenset()

    def served_methods(self) -> list[str]:
        """Methods this family serves on vLLM by name (a static count, what it provides)."""
        from vtcompress.registry import available_methods

        served = []
        for method in available_methods():
            try:
                resolve_settings(self, {"method": method}, None, num_layers=2)
            except ValueError:
                continue
            served.append(method)
        return served


def server_settings(family: MRopeFamily, hf_config: Any) -> dict[str, Any]:
    """The model config's ``vtcompress`` entry; without one, compression is off (the family's
    default method at ratio 1.0, so that a request naming only a ratio gets that method)."""
    if getattr(hf_config, KEY, None) is None:
        return {"method": family.default_method, "ratio": 1.0}
    return settings.server_settings(hf_config)


def resolve_settings(
    family: MRopeFamily, server: Mapping[str, Any], request: Any, num_layers: int, *, where: str = KEY
) -> CompressionConfig:
    """The config for one request: ``server`` settings changed by ``request``'s (None: none); a
    request that names another method starts from that method's defaults. Raises ValueError with
    one line that names the field and says what is accepted."""
    if request is None:
        options = dict(server)
    elif not isinstance(request, Mapping):
        raise ValueError(f'{where} must be a JSON object such as {{"ratio": 0.25}}, got {request!r}')
    elif "method" in request and request["method"] != server.get("method"):
        options = dict(request)
    else:
        options = {**server, **request}
    method = options.pop("method", family.default_method)
    if isinstance(method, str):
        options = {**family.name_defaults.get(method, {}), **options}
    try:
        config = make_config(method, **options)
    except (TypeError, ValueError) as err:
        raise ValueError(f"invalid {where}: {err}") from None
    dependence = config.content_dependence()
    if dependence:
        raise ValueError(
            f"invalid {where}: {config.method} with {dependence} keeps a number of tokens that depends on "
            "the content, and vLLM must know it before the model runs"
        )
    try:
        check_applicable(config, family.host, family.provides, num_layers - 1, num_layers)
    except ValueError as err:
        raise ValueError(f"invalid {where}: {err}") from None
    if family.frame_runs and splits_frames_by_content(config):
        raise ValueError(
            f"invalid {where}: {config.method} splits a clip's tokens over its frames by content, and "
            f"{family.display_name} gives every frame its own placeholder run, sized before the model "
            "runs; use dycoke_ttm, visionzip_video or an image method (e.g. 'uniform'), or ratio 1.0"
        )
    return config


def check_media(config: CompressionConfig, family: MRopeFamily, images: int, videos: int, where: str) -> None:
    """Refuse a request whose media the config cannot compress (one line naming the field)."""
    if images and not config.is_off and "image" not in config.media:
        raise ValueError(
            f"invalid {where}: method {config.method!r} compresses videos only and this request has "
            "images; send them with an image method (e.g. 'uniform') or ratio 1.0"
        )
    if videos and not config.is_off and not family.videos:
        raise ValueError(
            f"invalid {where}: vtcompress on vLLM compresses {family.display_name} images only; send "
            "videos with ratio 1.0"
        )


def image_layout(grid_thw: Any, merge: int) -> MergedGridLayout:
    """The layout of one image from its ``image_grid_thw`` row (t, h, w in patches)."""
    return MergedGridLayout.from_grid_thw(tuple(int(x) for x in grid_thw), merge)


def clip_layout(grid_thw: Any, merge: int) -> VideoLayout:
    """The layout of one clip from its ``video_grid_thw`` row: t temporal patches of h/m x w/m."""
    t, h, w = (int(x) for x in grid_thw)
    return VideoLayout(t, (h // merge, w // merge), patch_group=(merge, merge))


def image_count(config: CompressionConfig, grid_thw: Any, merge: int) -> int:
    """Placeholders of one image: the visual tokens the config keeps (no separators)."""
    kept = config.kept_count(image_layout(grid_thw, merge))
    if kept is None:  # refused by resolve_settings; kept as a guard
        raise ValueError(f"{config.method}: the count depends on the content")
    return kept


def clip_count(config: CompressionConfig, grid_thw: Any, merge: int) -> int:
    """Placeholders of one clip: the tokens the config keeps of it (a video method's own count;
    an image method's :func:`vtcompress.video.clip_keep_count`)."""
    kept = clip_kept_count(config, clip_layout(grid_thw, merge))
    if kept is None:
        raise ValueError(f"{config.method}: the count depends on the content")
    return kept


def frame_counts(config: CompressionConfig, grid_thw: Any, merge: int) -> list[int]:
    """Placeholders of each frame's run of one clip (a family with ``frame_runs``): the tokens
    the config keeps of each temporal patch."""
    counts = clip_frame_counts(config, clip_layout(grid_thw, merge))
    if counts is None:  # refused by resolve_settings; kept as a guard
        raise ValueError(f"{config.method}: the split over frames depends on the content")
    return counts
