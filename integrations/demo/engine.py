"""The demo's model side: one LLaVA-NeXT or LLaVA-OneVision loaded once, asked twice (compressed
and not) per request.

Compression hooks belong to the model object, so every generate call runs under one lock: while
a compressed run holds the hooks, no other request may run uncompressed on the same model.
Checking the input, drawing overlays and formatting happen outside the lock.

No gradio here: :class:`DemoEngine` is usable (and tested) on its own.
"""

from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from vtcompress.api import compress, compressed, get_handle
from vtcompress.inputs import ImageLimits, to_rgb
from vtcompress.integrations.demo import overlay
from vtcompress.integrations.llava_next.layout import AnyResLayout
from vtcompress.integrations.llava_next.prompt import chat_prompt
from vtcompress.integrations.llava_onevision.layout import OneVisionLayout
from vtcompress.integrations.llava_onevision.loader import method_config
from vtcompress.registry import available_methods
from vtcompress.stats import CompressionStats, ImageStats


class InputError(ValueError):
    """Bad user input; ``str(err)`` is the message to show on the page."""


@dataclass(frozen=True)
class Limits(ImageLimits):
    """What the demo accepts: the images ``vtcompress run`` accepts, and questions up to a length."""

    max_question_chars: int = 2000


@dataclass
class RunResult:
    """One generate call. prompt_tokens: length of the prompt the language model saw."""

    answer: str
    prompt_tokens: int
    new_tokens: int
    first_token_seconds: float
    total_seconds: float


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
    """A LLaVA-NeXT or LLaVA-OneVision model and processor shared by every request of the demo.

    Args:
        model: an uncompressed ``LlavaNextForConditionalGeneration`` or
            ``LlavaOnevisionForConditionalGeneration`` (eval mode).
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
        self.model = model.eval()
        self.processor = processor
        self.name = name
        self.random_weights = random_weights
        self.max_new_tokens = max_new_tokens
        self.limits = limits or Limits()
        self.lock = threading.Lock()
        cfg = model.config
        self.view_px = cfg.vision_config.image_size
        self.patch_px = cfg.vision_config.patch_size
        self.side = self.view_px // self.patch_px
        self.onevision = type(model).__name__ == "LlavaOnevisionForConditionalGeneration"

    @classmethod
    def from_pretrained(
        cls,
        model: str | os.PathLike = "tiny",
        device: str | None = None,
        dtype: str | torch.dtype | None = None,
        **kwargs: Any,
    ) -> DemoEngine:
        """Load a LLaVA-NeXT or LLaVA-OneVision checkpoint: ``"tiny"`` (a LLaVA-NeXT; offline,
        random weights), a hub id or a path."""
        from transformers import AutoProcessor, LlavaNextForConditionalGeneration

        from vtcompress.integrations.llava_next.loader import ModelNotFoundError, locate_checkpoint
        from vtcompress.integrations.llava_onevision.loader import is_onevision_checkpoint, load_onevision
        from vtcompress.integrations.tiny_models import is_random_tiny

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if dtype is None or dtype == "auto":
            dtype = torch.float16 if str(device).startswith("cuda") else torch.float32
        elif isinstance(dtype, str):
            dtype = getattr(torch, dtype)
        try:
            # Fails at once, naming the fix, for a missing path or an unreachable, uncached hub id.
            path, hub_kwargs = locate_checkpoint(model)
            if is_onevision_checkpoint(path, **hub_kwargs):
                llava, processor = load_onevision(path, dtype=dtype, **hub_kwargs)
            else:
                llava = LlavaNextForConditionalGeneration.from_pretrained(path, dtype=dtype, **hub_kwargs)
                processor = AutoProcessor.from_pretrained(path, **hub_kwargs)
        except ModelNotFoundError as err:  # its message already names the fix
            raise OSError(f"could not load a LLaVA-NeXT checkpoint from {str(model)!r}: {err}") from err
        except OSError as err:
            raise OSError(
                f"could not load a LLaVA-NeXT checkpoint from {str(model)!r}: {err}\n"
                "Give a local directory or a hub id reachable from here (e.g. "
                "llava-hf/llava-v1.6-mistral-7b-hf), or leave --model out for the offline tiny model."
            ) from err
        random_weights = Path(path).is_dir() and is_random_tiny(path)
        family = "LLaVA-OneVision" if type(llava).__name__.startswith("LlavaOnevision") else "LLaVA-NeXT"
        name = f"tiny {family} (random weights)" if random_weights else str(model)
        return cls(llava.to(device), processor, name, random_weights, **kwargs)

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
        problem = self.limits.problem(*size, patch_px=self.patch_px)
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

    def check_method(self, method: str | None, ratio: Any) -> tuple[str, float]:
        methods = available_methods()
        if method not in methods:
            raise InputError(f"Unknown method {method!r}; choose one of: {', '.join(methods)}.")
        try:
            ratio = float(ratio)
            method_config(self.model, method, ratio)
        except (TypeError, ValueError) as err:
            raise InputError(f"Invalid setting: {err}") from err
        return method, ratio

    # --- running ------------------------------------------------------------------------------
    def prompt(self, question: str) -> str:
        return chat_prompt(self.processor, question)

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
        self, image: Image.Image | str | os.PathLike | None, question: str | None, method: str, ratio: Any
    ) -> Comparison:
        """Answer ``question`` about ``image`` without and with compression.

        Raises :class:`InputError` (message for the user) on bad input.
        """
        image = self.load_image(image)
        question = self.check_question(question)
        method, ratio = self.check_method(method, ratio)
        inputs = self.processor(images=image, text=self.prompt(question), return_tensors="pt")
        inputs = inputs.to(self.model.device)
        if torch.is_floating_point(inputs["pixel_values"]):
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        config = method_config(self.model, method, ratio)  # a host's defaults for a method name
        with self.lock:
            try:
                compress(self.model, config).remove()  # a host that cannot serve the method says so
            except ValueError as err:
                raise InputError(f"{method} cannot run on this model: {err}") from err
            full = self._generate(inputs)
            with compressed(self.model, config) as handle:
                small = self._generate(inputs)
                stats = handle.last_stats
        return self._comparison(image, inputs, method, ratio, full, small, stats)

    # --- presentation -------------------------------------------------------------------------
    def _layout(self, image_size: tuple[int, int], num_views: int) -> AnyResLayout:
        if num_views == 1:
            return AnyResLayout.single_view(self.side)
        if self.onevision:
            cfg = self.model.config
            return OneVisionLayout.for_image(
                image_size,
                cfg.image_grid_pinpoints,
                self.view_px,
                self.patch_px,
                vision_aspect_ratio=cfg.vision_aspect_ratio,
            )
        return AnyResLayout.for_config(self.model.config, image_size)

    def _tile_pixels(self, image: Image.Image, layout: OneVisionLayout) -> list[np.ndarray]:
        """What each tile of a shrunk OneVision crop map shows: the image resized to one
        ``patch_px`` square per token of the map, centred in the tile grid (grey around it)."""
        (top, bottom), (left, right) = layout.valid_rows, layout.valid_cols
        p, side = self.patch_px, layout.side
        canvas = np.full((layout.rows * side * p, layout.cols * side * p, 3), 128, dtype=np.uint8)
        resized = image.resize(((right - left) * p, (bottom - top) * p), Image.Resampling.BICUBIC)
        canvas[top * p : bottom * p, left * p : right * p] = np.asarray(resized)
        size = side * p
        return [
            canvas[r * size : (r + 1) * size, c * size : (c + 1) * size]
            for r in range(layout.rows)
            for c in range(layout.cols)
        ]

    def _view_pixels(self, pixel_values: torch.Tensor) -> list[np.ndarray]:
        ip = self.processor.image_processor
        views = pixel_values.float().cpu().numpy()
        if not getattr(ip, "do_normalize", True):
            return [np.clip(v.transpose(1, 2, 0) / ip.rescale_factor, 0, 255).astype(np.uint8) for v in views]
        return [overlay.unnormalize(v, ip.image_mean, ip.image_std, ip.rescale_factor) for v in views]

    def _comparison(
        self,
        image: Image.Image,
        inputs: Any,
        method: str,
        ratio: float,
        full: RunResult,
        small: RunResult,
        stats: CompressionStats,
    ) -> Comparison:
        image_size = (image.height, image.width)
        pixel_values = inputs["pixel_values"][0]
        layout = self._layout(image_size, pixel_values.shape[0])
        if getattr(layout, "resampled_from", None):  # OneVision shrank the crops: show its tiles
            pictures = self._view_pixels(pixel_values[:1]) + self._tile_pixels(image, layout)
        else:
            pictures = self._view_pixels(pixel_values[: layout.num_views])
        # The pipeline reports every call with images, ratio 1.0 included.
        im: ImageStats = stats.images[0]
        sample = stats.samples[0]
        valid = [None] + (
            [m.view(self.side, self.side).numpy() for m in layout.crop_valid_mask()]
            if layout.has_crops
            else []
        )
        views, has_sizes, has_sources = [], False, False
        seen = self.side * self.patch_px  # SigLIP at 384 px sees 27 patches of 14: 378 px
        for v, pixels in enumerate(p[:seen, :seen] for p in pictures):
            vs = im.views[v]
            has_sizes |= vs.sizes is not None
            has_sources |= vs.sources is not None
            picture = overlay.render_view(pixels, self.side, vs.positions, valid[v], vs.sizes, vs.sources)
            views.append(ViewPicture(vs.name, vs.original, vs.kept, picture))
        note = im.note
        if method_config(self.model, method, ratio).is_off:
            note = "Ratio 1.0 switches compression off: both runs are the same model, token for token."
        return Comparison(
            method=method,
            ratio=ratio,
            image_size=image_size,
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
            legend=overlay.legend(has_sizes, has_sources),
            note=note,
        )


def format_flops(flops: float) -> str:
    if flops <= 0 or not math.isfinite(flops):
        return "0 FLOPs"
    exp = min(int(math.log10(flops) // 3), 5)
    unit = ["", "k", "M", "G", "T", "P"][exp]
    return f"{flops / 10 ** (3 * exp):.3g} {unit}FLOPs"
