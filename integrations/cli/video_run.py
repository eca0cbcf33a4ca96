"""``vtcompress run --video FILE`` (or ``--example clip``): one clip, one question, the model with
and without compression, the same timing protocol as an image run (:mod:`.quickrun`).

Frames are sampled uniformly (:mod:`vtcompress.integrations.video_frames`) and turned into the
model's inputs by the family's declared ``video_inputs`` (no video processor, so no torchvision).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vtcompress.api import compress as compressed_model
from vtcompress.api import config_for
from vtcompress.integrations.cli.quickrun import (
    DTYPES,
    answer,
    check_device,
    check_method_setting,
    load,
    measure,
    report_timings,
)
from vtcompress.integrations.cli.usage import DEFAULT_VIDEO_METHOD, UsageError, image_flag
from vtcompress.integrations.video_frames import Clip, read_clip
from vtcompress.stats import CompressionStats, ImageStats


def video_families() -> str:
    from vtcompress.hosts import loadable_specs

    specs = [s for s in loadable_specs() if s.video_inputs is not None]
    return ", ".join(f"{s.display_name} (--model {s.tiny_name} offline)" for s in specs)


def run_video(args: argparse.Namespace, path: Path, question: str, described: str) -> int:
    """The ``vtcompress run`` job on a video; raises UsageError (one line, exit 2) on bad input."""
    device = check_device(args.device)
    args.device_used = device
    given = "".join(f" --option {item}" for item in args.option or [])
    args.method = args.method or DEFAULT_VIDEO_METHOD
    check_method_setting(args, given)  # a bad method setting fails before the model loads
    checkpoint = load(args, device)
    spec = checkpoint.spec
    if spec.video_inputs is None:
        raise UsageError(
            f"--model {args.model}: vtcompress takes no videos on {spec.display_name}; use a model of "
            f"{video_families()}"
        )
    options = check_method_setting(args, given)
    frames = args.frames or spec.video_frames
    try:
        clip = read_clip(path, frames)
    except (ValueError, ImportError) as err:  # names the file or the pip command
        raise UsageError(f"{image_flag(args)}: {err}") from None
    model, processor = checkpoint.model, checkpoint.processor
    print(f"vtcompress run: model {args.model}, {args.method}, ratio {args.ratio:g}, device {device}")
    if checkpoint.random_weights:
        print(
            f"note: the tiny {checkpoint.family_name} has RANDOM weights: its answers are meaningless; token "
            f"counts, timings and FLOPs are real. For real answers: --model {spec.hub_example}."
        )
    try:
        config = config_for(model, args.method, ratio=args.ratio, **options)
        compressed_model(model, config).remove()  # a host that cannot serve the method says so here
    except (TypeError, ValueError) as err:
        raise UsageError(f"--method {args.method}{given}: {err}") from None
    if config.changed_options() and not config.is_off:
        print(f"method options: {config.changed_options()}")
    inputs = spec.load("video_inputs")(model.config, processor, clip.frames, question, clip.seconds_between)
    inputs = {k: v.to(device) for k, v in inputs.items()}
    inputs["pixel_values_videos"] = inputs["pixel_values_videos"].to(DTYPES[args.dtype])
    base, comp, stats = measure(model, inputs, config, args.warmup, args.repeats, device)
    if stats is None or not stats.images:
        raise RuntimeError(f"{args.method} at ratio {args.ratio} reported no statistics for the video")
    answers = (
        answer(model, processor, inputs, args.max_new_tokens, None),
        answer(model, processor, inputs, args.max_new_tokens, config),
    )
    print(f"video:    {described}")
    print(f"question: {question}")
    print(f"answer without compression: {answers[0]}")
    print(f"answer with compression:    {answers[1]}")
    print()
    report_clip(args, clip, stats, config.is_off)
    sample = stats.samples[0]
    report_timings(args, base, comp, (sample.prefill_flops_before, sample.prefill_flops_after), config.is_off)
    return 0


def report_clip(args: argparse.Namespace, clip: Clip, stats: CompressionStats, off: bool) -> None:
    """Frames sampled and the clip's visual tokens per frame before and after compression."""
    video: ImageStats = stats.images[0]
    steps = len(video.views)
    shown = ", ".join(str(i) for i in clip.indices)
    print(f"frames: {len(clip.frames)} of {clip.total} sampled uniformly (indices {shown})")
    if steps < len(clip.frames):  # Qwen2.5-VL: one time step per 2 frames, the last repeated if odd
        patch = -(-len(clip.frames) // steps)
        print(f"  the model sees {steps} time steps of {patch} frames (its temporal patch)")
    state = "compression off (ratio 1.0)" if off else f"{args.method} at ratio {args.ratio:g}"
    before, after = video.tokens_before, video.tokens_after
    print(f"visual tokens, {state}: {before} -> {after} ({after / before:.1%} kept)")
    print("tokens per time step, before -> after:")
    width = max(len(v.name) for v in video.views)
    for view in video.views:
        print(f"  {view.name:<{width}}  {view.original:>5} -> {view.kept:>5}")
    if video.newlines_before:
        print(f"  {'newline':<{width}}  {video.newlines_before:>5} -> {video.newlines_after:>5}")
    sample = stats.samples[0]
    print(f"prompt length seen by the language model: {sample.length_before} -> {sample.length_after} tokens")
