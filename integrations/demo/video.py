"""The demo's video side: a clip (a video file, or the bundled example clip), one question, the
model without and with compression, and the clip's token counts per frame.

Offered for the families whose declaration has ``video_inputs`` (the same inputs ``vtcompress
run --video`` builds: frames sampled uniformly, no video processor). No gradio here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vtcompress.api import compress, compressed
from vtcompress.integrations.demo.common import InputError, RunResult, format_flops
from vtcompress.integrations.video_frames import read_clip


@dataclass
class FrameCount:
    """One frame as the model sees it (one time step: a temporal patch of two video frames where
    the model has one)."""

    name: str
    original: int
    kept: int


@dataclass
class VideoComparison:
    """Everything the video tab shows for one question."""

    method: str
    ratio: float
    frames_sampled: int
    frame_indices: list[int]
    frames_in_file: int
    compressed: RunResult
    uncompressed: RunResult
    tokens_before: int
    tokens_after: int
    compress_seconds: float
    flops_before: float
    flops_after: float
    frames: list[FrameCount] = field(default_factory=list)
    note: str = ""
    options: str = ""


def compare_video(
    engine: Any,  # a vtcompress.integrations.demo.engine.DemoEngine
    video: str | os.PathLike | None,
    question: str | None,
    method: str,
    ratio: Any,
    options: str | dict[str, Any] | None = None,
    frames: int | None = None,
) -> VideoComparison:
    """Answer ``question`` about the video file ``video`` without and with compression
    (``frames`` sampled uniformly; default: the family's ``video_frames``). Raises
    :class:`~vtcompress.integrations.demo.common.InputError` (a message for the user) on bad input."""
    if not engine.takes_video:
        raise InputError(f"The demo takes no videos on {engine.spec.display_name}.")
    if video is None or not str(video).strip():
        raise InputError("Please upload a video (or pick the example clip below).")
    question = engine.check_question(question)
    config = engine.check_method(method, ratio, options)
    try:
        clip = read_clip(Path(video), frames or engine.spec.video_frames)
    except (ValueError, ImportError) as err:  # names the file, or the pip command for PyAV
        raise InputError(str(err)) from None
    build = engine.spec.load("video_inputs")
    inputs = build(engine.model.config, engine.processor, clip.frames, question, clip.seconds_between)
    inputs = {k: v.to(engine.model.device) for k, v in inputs.items()}
    inputs["pixel_values_videos"] = inputs["pixel_values_videos"].to(engine.model.dtype)
    with engine.lock:
        try:
            compress(engine.model, config).remove()  # a host that cannot serve the method says so
        except ValueError as err:
            raise InputError(f"{method} cannot run on this model: {err}") from err
        full = engine._generate(inputs)
        with compressed(engine.model, config) as handle:
            small = engine._generate(inputs)
            stats = handle.last_stats
    (clip_stats,) = stats.images
    sample = stats.samples[0]
    note = clip_stats.note
    if config.is_off:
        note = "Ratio 1.0 switches compression off: both runs are the same model, token for token."
    return VideoComparison(
        method=config.method,
        ratio=config.ratio,
        frames_sampled=len(clip.frames),
        frame_indices=clip.indices,
        frames_in_file=clip.total,
        compressed=small,
        uncompressed=full,
        tokens_before=clip_stats.tokens_before,
        tokens_after=clip_stats.tokens_after,
        compress_seconds=stats.compress_seconds,
        flops_before=sample.prefill_flops_before,
        flops_after=sample.prefill_flops_after,
        frames=[FrameCount(v.name, v.original, v.kept) for v in clip_stats.views],
        note=note,
        options=config.changed_options(),
    )


def video_markdown(c: VideoComparison) -> str:
    """The video tab's report: the clip's token counts, per frame before and after, and costs."""
    pct = 100 * c.tokens_after / c.tokens_before if c.tokens_before else 100.0
    options = f" ({c.options})" if c.options else ""
    shown = ", ".join(str(i) for i in c.frame_indices)
    sampled = f"Frames: {c.frames_sampled} of {c.frames_in_file} sampled uniformly (indices {shown})"
    steps = len(c.frames)
    if steps < c.frames_sampled:  # a temporal patch: one time step per 2 frames, the last repeated if odd
        sampled += f"; the model sees {steps} time steps of {-(-c.frames_sampled // steps)} frames"
    lines = [
        f"**{c.method}**{options} at ratio **{c.ratio:g}**: **{c.tokens_before} → {c.tokens_after}** "
        f"visual tokens ({pct:.1f}% kept); compression took {c.compress_seconds * 1e3:.1f} ms.",
        "",
        sampled + ".",
        "",
        "| frame | tokens before | tokens after |",
        "|---|---:|---:|",
        *(f"| {f.name} | {f.original} | {f.kept} |" for f in c.frames),
        "",
        "| | uncompressed | compressed |",
        "|---|---:|---:|",
        f"| prompt length seen by the language model | {c.uncompressed.prompt_tokens} "
        f"| {c.compressed.prompt_tokens} |",
        f"| time to first token | {c.uncompressed.first_token_seconds:.3f} s "
        f"| {c.compressed.first_token_seconds:.3f} s |",
        f"| decoder prefill, estimated | {format_flops(c.flops_before)} | {format_flops(c.flops_after)} |",
    ]
    if c.note:
        lines += ["", f"*{c.note}*"]
    return "\n".join(lines)
