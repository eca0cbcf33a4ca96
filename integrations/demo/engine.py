"""The demo's model side: one model of a declared family (one whose
:class:`~vtcompress.hosts.HostSpec` has ``demo_views``) loaded once, asked twice (compressed and
not) per request.

Compression hooks belong to the model object, so every generate call runs under one lock: while
a compressed run holds the hooks, no other request may run uncompressed on the same model.
Checking the input, drawing overlays and formatting happen outside the lock.

No gradio here: :class:`DemoEngine` is usable (and tested) on its own.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from vtcompress.api import compress, compressed, config_for, get_handle
from vtcompress.config import CompressionConfig
from vtcompress.hosts import HostSpec, host_specs, spec_for_model_type
from vtcompress.integrations.demo import overlay
from vtcompress.integrations.demo.common import InputError, RunResult, format_flops  # noqa: F401 (public here too)
from vtcompress.integrations.inputs import ImageLimits, to_rgb
from vtcompress.registry import available_methods, parse_options
from vtcompress.stats import CompressionStats, ImageStats


@dataclass(frozen=True)
class Limits(ImageLimits):
    """What the demo accepts: the images ``vtcompress run`` accepts, and questions up to a length."""

    max_question_chars: int = 2000


@dataclass
class ViewPicture:
    name: str
    original: int
    kept: int
    image: Image.Image


@dataclass
class Comparison:
    """Everything the page shows for one question."""

    method: str
    ratio: float
    image_size: tuple[int, int]  # (height, width)
    compressed: RunResult
    uncompressed: RunResult
    tokens_before: int
    tokens_after: int
    newlines_before: int
    newlines_after: int
    compress_seconds: float
    flops_before: float
    flops_after: float
    views: list[ViewPicture] = field(default_factory=list)
    legend: str = ""
    note: str = ""
    options: str = ""  # the method's options that differ from its defaults, e.g. "metric='projected'"

    @property
    def flops_saved(self) -> float:
        return self.flops_before - self.flops_after


class _FirstTokenTimer:
    """generate() streamer: the first ``put`` is the prompt, the second the first new token."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.first_token: float | None = None
        self.prompt_tokens = 0
        self.calls = 0

    def put(self, value: torch.Tensor) -> None:
        self.calls += 1
        if self.calls == 1:
            self.prompt_tokens = int(value.shape[-1])
        elif self.first_token is None:
            self.first_token = time.perf_counter() - self.start

    def end(self) -> None:
        pass


def _printable(text: str) -> str:
    # A model with random weights emits arbitrary bytes; keep the page readable.
    return "".join(ch if ch.isprintable() or ch in "\n\t" else "\ufffd" for ch in text).strip()


class DemoEngine:
    """A model and processor shared by every request of the demo.

    Args:
        model: an uncompressed model of a family whose declaration has ``demo_views`` (its
            ``*ForConditionalGeneration`` class).
        processor: its processor.
        name: shown on the page.
        random_weights: True for the offline tiny model (the page says its answers mean nothing).
        max_new_tokens: answer length limit.
        limits: accepted images and questions.
    """

    def __init__(
        self,
        model: Any,
        processor: Any,
        name: str = "model",
        random_weights: bool = False,
        max_new_tokens: int = 48,
        limits: Limits | None = None,
    ) -> None:
        if get_handle(model) is not None:
            raise ValueError("DemoEngine needs an uncompressed model (call handle.remove() first)")
        spec = spec_for_model_type(getattr(model.config, "model_type", None) or "")
        if spec is None or spec.demo_views is None or not hasattr(model, "generate"):
            shown = ", ".join(s.display_name for s in host_specs() if s.demo_views)
            raise ValueError(
                f"the demo shows {shown} models that generate (the *ForConditionalGeneration "
                f"classes); got {type(model).__name__}"
            )
        self.model = model.eval()
        self.processor = processor
        self.name = name
        self.random_weights = random_weights
        self.max_new_tokens = max_new_tokens
        self.limits = limits or Limits()
        self.lock = threading.Lock()
        self.spec: HostSpec = spec
        self.family = spec.name
        self.encoder_patch_px = model.config.vision_config.patch_size
        self.max_aspect = None if spec.max_aspect is None else (spec.display_name, spec.max_aspect)

    @classmethod
    def from_pretrained(
        cls,
        model: str | os.PathLike = "tiny",
        device: str | None = None,
        dtype: str | torch.dtype | None = None,
        **kwargs: Any,
    ) -> DemoEngine:
        """Load a checkpoint of a declared family: a hub id, a path, or an offline tiny model with
        random weights (a family's ``tiny_name``: ``"tiny"``, a LLaVA-NeXT, ...)."""
        from vtcompress.integrations.checkpoints import CheckpointError, load_checkpoint
        from vtcompress.integrations.locate import ModelNotFoundError

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if dtype is None or dtype == "auto":
            dtype = torch.float16 if str(device).startswith("cuda") else torch.float32
        elif isinstance(dtype, str):
            dtype = getattr(torch, dtype)
        try:
            # Fails at once, naming the fix, for a missing path or an unreachable, uncached hub id.
            checkpoint = load_checkpoint(model, dtype=dtype)
        except CheckpointError:  # one line naming the fix
            raise
        except ModelNotFoundError as err:  # names the fix; say what was being loaded
            raise OSError(f"could not load a checkpoint from {str(model)!r}: {err}") from err
        name = f"tiny {checkpoint.family_name} (random weights)" if checkpoint.random_weights else str(model)
        return cls(
            checkpoint.model.to(device), checkpoint.processor, name, checkpoint.random_weights, **kwargs
        )

    # --- input checks -------------------------------------------------------------------------
    def load_image(self, image: Image.Image | str | os.PathLike | None) -> Image.Image:
        """Open and check an uploaded image; raises :class:`InputError` with a message to show."""
        if image is None or (isinstance(image, str) and not image.strip()):
            raise InputError("Please upload an image (or pick one of the examples below).")
        if not isinstance(image, Image.Image):
            image = self._open(Path(image))
        self._check_size(image.size)
        return to_rgb(image)

    def _open(self, path: Path) -> Image.Image:
        unreadable = (
            f"Could not read {path.name!r} as an image. Please upload a PNG, JPEG, WebP, GIF or BMP file."
        )
        try:
            opened = Image.open(path)
        except Image.DecompressionBombError as err:
            raise InputError(
                f"{path.name!r} is far too large to decode safely; please upload an image of at most "
                f"{self.limits.max_pixels / 1e6:.0f} megapixels."
            ) from err
        except (UnidentifiedImageError, OSError) as err:
            raise InputError(unreadable) from err
        with opened:
            self._check_size(opened.size)  # before decoding the pixels
            try:
                opened.load()
                return ImageOps.exif_transpose(opened)
            except (OSError, SyntaxError, ValueError) as err:  # truncated or corrupt file
                raise InputError(unreadable) from err

    def _check_size(self, size: tuple[int, int]) -> None:
        problem = self.limits.problem(*size, patch_px=self.encoder_patch_px, max_aspect=self.max_aspect)
        if problem:
            raise InputError(problem)

    def check_question(self, question: str | None) -> str:
        question = (question or "").strip()
        if not question:
            raise InputError("Please type a question about the image.")
        if len(question) > self.limits.max_question_chars:
            raise InputError(
                f"The question has {len(question)} characters; please keep it under "
                f"{self.limits.max_question_chars}."
            )
        return question

    def check_method(
        self, method: str | None, ratio: Any, options: str | dict[str, Any] | None = None
    ) -> CompressionConfig:
        """The config for ``method`` at ``ratio`` on this model: ``options`` (a dict, or
        ``KEY=VALUE`` items separated by commas or new lines) win, then the host's defaults for
        the method name. Raises :class:`InputError` on a bad setting."""
        methods = available_methods()
        if method not in methods:
            raise InputError(f"Unknown method {method!r}; choose one of: {', '.join(methods)}.")
        try:
            if not isinstance(options, dict):
                options = parse_options(method, [options or ""], reserved={"ratio": "set it with the slider"})
            elif "ratio" in options:
                raise ValueError("ratio is not a method option here: set it with the slider")
            return config_for(self.model, method, ratio=float(ratio), **options)
        except (TypeError, ValueError) as err:
            raise InputError(f"Invalid setting: {err}") from err

    def served_methods(self) -> list[str]:
        """The registered image methods this model's host serves by name (public ones: a name
        starting with "_" is private)."""
        return self._served(available_methods("image"))

    def _served(self, methods: list[str]) -> list[str]:
        served = []
        with self.lock:
            for method in methods:
                if method.startswith("_"):
                    continue
                try:
                    compress(self.model, method).remove()
                except (TypeError, ValueError):  # refused by the host: not offered
                    continue
                served.append(method)
        return served

    @property
    def takes_video(self) -> bool:
        """Whether this model's family declares video inputs (the demo's video tab)."""
        return self.spec.video_inputs is not None

    def served_video_methods(self) -> list[str]:
        """What the video tab offers: the video methods this model's host serves, then the image
        methods (run frame by frame); empty when the family takes no videos."""
        if not self.takes_video:
            return []
        video = sorted(set(available_methods()) - set(available_methods("image")))
        return self._served(video) + self.served_methods()

    # --- running ------------------------------------------------------------------------------
    def prompt(self, question: str) -> str:
        return self.spec.load("prompt")(self.processor, question)

    def _generate(self, inputs: dict[str, Any]) -> RunResult:
        timer = _FirstTokenTimer()
        with torch.inference_mode():
            out = self.model.generate(
                **inputs, max_new_tokens=self.max_new_tokens, do_sample=False, streamer=timer
            )
        total = time.perf_counter() - timer.start
        new = out[0, inputs["input_ids"].shape[1] :]
        answer = _printable(self.processor.tokenizer.decode(new, skip_special_tokens=True))
        first = timer.first_token if timer.first_token is not None else total
        return RunResult(answer or "(empty answer)", timer.prompt_tokens, int(new.numel()), first, total)

    def compare(
        self,
        image: Image.Image | str | os.PathLike | None,
        question: str | None,
        method: str,
        ratio: Any,
        options: str | dict[str, Any] | None = None,
    ) -> Comparison:
        """Answer ``question`` about ``image`` without and with compression (``method`` at
        ``ratio``, with ``options``: see :meth:`check_method`).

        Raises :class:`InputError` (message for the user) on bad input.
        """
        image = self.load_image(image)
        question = self.check_question(question)
        config = self.check_method(method, ratio, options)
        inputs = self.processor(images=image, text=self.prompt(question), return_tensors="pt")
        inputs = inputs.to(self.model.device)
        if torch.is_floating_point(inputs["pixel_values"]):
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        with self.lock:
            try:
                compress(self.model, config).remove()  # a host that cannot serve the method says so
            except ValueError as err:
                raise InputError(f"{method} cannot run on this model: {err}") from err
            full = self._generate(inputs)
            with compressed(self.model, config) as handle:
                small = self._generate(inputs)
                stats = handle.last_stats
        return self._comparison(image, inputs, config, full, small, stats)

    def compare_video(
        self,
        video: str | os.PathLike | None,
        question: str | None,
        method: str,
        ratio: Any,
        options: str | dict[str, Any] | None = None,
        frames: int | None = None,
    ) -> Any:  # a vtcompress.integrations.demo.video.VideoComparison
        """Answer ``question`` about a video file without and with compression (see
        :func:`vtcompress.integrations.demo.video.compare_video`)."""
        from vtcompress.integrations.demo.video import compare_video

        return compare_video(self, video, question, method, ratio, options, frames)

    # --- presentation -------------------------------------------------------------------------
    def _pictures(self, image: Image.Image, inputs: Any) -> list[tuple[np.ndarray, tuple[int, int], Any]]:
        """Per view of the first image, what the tower saw: ``(pixels [H, W, 3] uint8, token grid
        (rows, cols), valid mask [rows, cols] bool or None)``; the family's ``demo_views`` draws them."""
        return self.spec.load("demo_views")(self, image, inputs)

    def view_pixels(self, pixel_values: torch.Tensor) -> list[np.ndarray]:
        """[V, 3, H, W] processor output -> per view [H, W, 3] uint8."""
        return [self.unnormalize(v) for v in pixel_values.float().cpu().numpy()]

    def unnormalize(self, view: np.ndarray) -> np.ndarray:
        """A processor-normalised view [3, H, W] back to [H, W, 3] uint8 pixels."""
        ip = self.processor.image_processor
        if not getattr(ip, "do_normalize", True):
            return np.clip(view.transpose(1, 2, 0) / ip.rescale_factor, 0, 255).astype(np.uint8)
        return overlay.unnormalize(view, ip.image_mean, ip.image_std, ip.rescale_factor)

    def _comparison(
        self,
        image: Image.Image,
        inputs: Any,
        config: CompressionConfig,
        full: RunResult,
        small: RunResult,
        stats: CompressionStats,
    ) -> Comparison:
        # The pipeline reports every call with images, ratio 1.0 included.
        im: ImageStats = stats.images[0]
        sample = stats.samples[0]
        views, has_sizes, has_sources, has_padding = [], False, False, False
        for vs, (pixels, grid, valid) in zip(im.views, self._pictures(image, inputs), strict=True):
            has_sizes |= vs.sizes is not None
            has_sources |= vs.sources is not None
            has_padding |= valid is not None and not valid.all()
            picture = overlay.render_view(pixels, grid, vs.positions, valid, vs.sizes, vs.sources)
            views.append(ViewPicture(vs.name, vs.original, vs.kept, picture))
        note = im.note
        if config.is_off:
            note = "Ratio 1.0 switches compression off: both runs are the same model, token for token."
        return Comparison(
            method=config.method,
            ratio=config.ratio,
            image_size=(image.height, image.width),
            compressed=small,
            uncompressed=full,
            tokens_before=im.tokens_before,
            tokens_after=im.tokens_after,
            newlines_before=im.newlines_before,
            newlines_after=im.newlines_after,
            compress_seconds=stats.compress_seconds,
            flops_before=sample.prefill_flops_before,
            flops_after=sample.prefill_flops_after,
            views=views,
            legend=overlay.legend(has_sizes, has_sources, has_padding),
            note=note,
            options=config.changed_options(),
        )
