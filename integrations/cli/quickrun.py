"""``vtcompress run``: one image, one question, the model with and without compression.

Timing protocol (see docs/cli.md): ``warmup`` untimed forward passes of each model, then
``repeats`` timed prefill passes (one forward over the whole prompt), the uncompressed and the
compressed model alternating so that a change in machine load hits both alike. Forward hooks
time the vision tower and the language model apart; the compressor's own time comes from the
compression stats; "other" is the rest of the forward (projector, packing, LM head).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from vtcompress.api import compress as compressed_model
from vtcompress.api import compressed, config_for
from vtcompress.config import CompressionConfig
from vtcompress.integrations.cli.timing import StageClock, Timing, synchronize
from vtcompress.integrations.cli.usage import UsageError, image_flag
from vtcompress.integrations.inputs import IMAGE_LIMITS
from vtcompress.registry import make_config
from vtcompress.stats import CompressionStats

STAGES = ("vision tower", "compressor", "language model", "other", "whole forward")
# Above this spread between repeats, a timing says more about the machine than about the model.
NOISY_SPREAD = 0.25
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class Measured:
    """Timings of one model variant: stage name -> seconds of each repeat."""

    seconds: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in STAGES})

    def timing(self, stage: str) -> Timing:
        return Timing(self.seconds[stage])


def check_device(name: str | None) -> torch.device:
    """The torch device to run on; a UsageError naming the fix if it is not usable here (its name
    was checked by :func:`~vtcompress.integrations.cli.usage.check_device_name`)."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(
                f"--device {name}: no CUDA device is usable here (torch {torch.__version__}); use --device cpu"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(
                f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                f"cuda:0 to cuda:{torch.cuda.device_count() - 1}"
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"--device {name}: MPS is not available here; use --device cpu")
    return device


def load(args: argparse.Namespace, device: torch.device):
    """The :class:`~vtcompress.integrations.checkpoints.Checkpoint` of ``args.model`` (any family
    of :mod:`vtcompress.integrations.checkpoints`) on ``device``, or a UsageError naming the fix."""
    from vtcompress.integrations.checkpoints import CheckpointError, load_checkpoint
    from vtcompress.integrations.locate import ModelNotFoundError

    try:
        checkpoint = load_checkpoint(args.model, dtype=DTYPES[args.dtype])
    except (ModelNotFoundError, CheckpointError) as err:  # one line each, naming the fix
        raise UsageError(f"--model: {err}") from None
    if checkpoint.from_cache:
        print(f"note: the hub is not reachable; loaded {args.model} from the local cache", file=sys.stderr)
    checkpoint.model.to(device)
    return checkpoint


def prompt_inputs(processor, image, question: str, device: torch.device, dtype: torch.dtype):
    from vtcompress.integrations.prompt import chat_prompt

    prompt = chat_prompt(processor, question)
    inputs = processor(images=image, text=prompt, return_tensors="pt").to(device)
    inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
    return inputs


def _one_pass(model, inputs, clock: StageClock, stats_of) -> dict[str, float]:
    with clock.watching():
        synchronize(clock.device)
        start = time.perf_counter()
        model(**inputs)
        synchronize(clock.device)
        whole = time.perf_counter() - start
    stats: CompressionStats | None = stats_of()
    compressor = stats.compress_seconds if stats is not None else 0.0
    vision, language = clock.seconds["vision tower"], clock.seconds["language model"]
    return {
        "vision tower": vision,
        "compressor": compressor,
        "language model": language,
        "other": max(whole - vision - compressor - language, 0.0),
        "whole forward": whole,
    }


def measure(model, inputs, config: CompressionConfig, warmup: int, repeats: int, device: torch.device):
    """Time prefill passes of both variants; returns ``(uncompressed, compressed, last stats)``."""
    inner = model.model
    tower = inner.visual if hasattr(inner, "visual") else inner.vision_tower  # Qwen2.5-VL: .visual
    clock = StageClock({"vision tower": tower, "language model": inner.language_model}, device)
    results = {"uncompressed": Measured(), "compressed": Measured()}
    last: list[CompressionStats | None] = [None]

    def run(variant: str) -> dict[str, float]:
        if variant == "uncompressed":
            return _one_pass(model, inputs, clock, lambda: None)
        with compressed(model, config) as handle:
            handle.last_stats = None
            seconds = _one_pass(model, inputs, clock, lambda: handle.last_stats)
            last[0] = handle.last_stats
        return seconds

    with torch.inference_mode():
        for _ in range(warmup):
            run("uncompressed")
            run("compressed")
        for i in range(repeats):
            order = ("uncompressed", "compressed") if i % 2 == 0 else ("compressed", "uncompressed")
            for variant in order:
                for stage, seconds in run(variant).items():
                    results[variant].seconds[stage].append(seconds)
    return results["uncompressed"], results["compressed"], last[0]


def answer(model, processor, inputs, max_new_tokens: int, config: CompressionConfig | None) -> str:
    with torch.inference_mode():
        if config is None:
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        else:
            with compressed(model, config):
                out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    text = processor.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    # A model with random weights emits arbitrary bytes: keep the terminal readable.
    text = "".join(ch if ch.isprintable() else "\ufffd" for ch in text).strip()
    return text or "(empty answer)"


def views_and_lengths(stats: CompressionStats):
    """Per view ``(name, original, kept)``, and prompt lengths and decoder FLOPs before/after
    (the pipeline reports them at every ratio, 1.0 included)."""
    im, sample = stats.images[0], stats.samples[0]
    views = [(v.name, v.original, v.kept) for v in im.views]
    lengths = (sample.length_before, sample.length_after)
    flops = (sample.prefill_flops_before, sample.prefill_flops_after)
    return views, (im.newlines_before, im.newlines_after), lengths, flops, im.note


def _ratio_text(after: float, before: float) -> str:
    return f"{after / before:.2f}x" if before > 0 else "n/a"


def report(
    args, described, question, answers, views, newlines, lengths, flops, note, base, comp, off
) -> None:
    print(f"image:    {described}")
    print(f"question: {question}")
    print(f"answer without compression: {answers[0]}")
    print(f"answer with compression:    {answers[1]}")
    print()
    before, kept = sum(v[1] for v in views), sum(v[2] for v in views)
    state = (
        "compression off (ratio 1.0): every token kept" if off else f"{args.method} at ratio {args.ratio:g}"
    )
    print(f"visual tokens, {state}: {before} -> {kept} ({kept / before:.1%} kept; newline tokens excluded)")
    width = max(len(v[0]) for v in views)
    for name, original, k in views:
        print(f"  {name:<{width}}  {original:>5} -> {k:>5}")
    if newlines != (0, 0):  # a model without newline tokens (Qwen2.5-VL) has nothing to say here
        print(f"  {'newlines':<{width}}  {newlines[0]:>5} -> {newlines[1]:>5}")
    print(f"prompt length seen by the language model: {lengths[0]} -> {lengths[1]} tokens")
    if note:
        print(f"note: {note}")
    report_timings(args, base, comp, flops, off)


def report_timings(args, base: Measured, comp: Measured, flops: tuple[float, float], off: bool) -> None:
    """The prefill timings of both variants, the analytic FLOPs, and what makes the timings noisy."""
    print()
    device = args.device_used
    threads = f", {torch.get_num_threads()} torch thread(s)" if device.type == "cpu" else ""
    print(
        f"prefill time on {device} ({args.dtype}{threads}): {args.warmup} warm-up + {args.repeats} timed "
        "passes of each model, median [min-max] ms"
    )
    print(f"  {'':<15} {'uncompressed':>24} {'compressed':>24}  compressed/uncompressed")
    for stage in STAGES:
        b, c = base.timing(stage), comp.timing(stage)
        ratio = "" if stage == "compressor" else _ratio_text(c.median, b.median)
        print(f"  {stage:<15} {b.format_ms():>24} {c.format_ms():>24}  {ratio}".rstrip())
    lm = (base.timing("language model"), comp.timing("language model"))
    print(
        f"language model prefill FLOPs (analytic): {flops[0] / 1e9:.3f} -> {flops[1] / 1e9:.3f} GFLOPs "
        f"({_ratio_text(flops[1], flops[0])}); measured time {_ratio_text(lm[1].median, lm[0].median)}"
    )
    for warning in noise_warnings(base, comp, off):
        print(f"warning: {warning}", file=sys.stderr)


def noise_warnings(base: Measured, comp: Measured, off: bool) -> list[str]:
    """What makes these timings unreliable, if anything."""
    warnings = []
    spreads = {
        f"{variant} {stage}": m.timing(stage).spread
        for variant, m in (("uncompressed", base), ("compressed", comp))
        for stage in ("language model", "whole forward")
    }
    noisy = {k: v for k, v in spreads.items() if v > NOISY_SPREAD}
    if noisy:
        worst = max(noisy, key=noisy.get)
        warnings.append(
            f"the timed passes vary by up to {noisy[worst]:.0%} of their median ({worst}): the machine is "
            "busy or the model too small to time; read the times as rough, or raise --repeats"
        )
    lm_base, lm_comp = base.timing("language model"), comp.timing("language model")
    if not off and len(lm_base.samples) > 1 and lm_base.overlaps(lm_comp):
        warnings.append(
            "the uncompressed and compressed language-model times overlap: their difference is within "
            "the noise of this machine; the FLOPs ratio is the figure to trust here"
        )
    if len(lm_base.samples) < 3:
        warnings.append(
            f"{len(lm_base.samples)} timed pass(es) give no idea of the spread: use --repeats 5 or more"
        )
    return warnings


def check_method_setting(args: argparse.Namespace, given: str) -> dict[str, Any]:
    """The typed options of ``args.method``, checked against its config; a UsageError naming the
    flags otherwise."""
    options = method_options(args)
    try:
        make_config(args.method, ratio=args.ratio, **options)
    except (TypeError, ValueError) as err:
        raise UsageError(f"--method {args.method}{given}: {err}") from None
    return options


def method_options(args: argparse.Namespace) -> dict[str, Any]:
    """The typed ``--option KEY=VALUE`` settings of ``args.method``; a UsageError naming the fix."""
    from vtcompress.registry import parse_options

    try:
        return parse_options(args.method, args.option or [], reserved={"ratio": "give the ratio as --ratio"})
    except ValueError as err:
        raise UsageError(f"--option: {err}") from None


def run(args: argparse.Namespace, image: Image.Image, question: str, described: str) -> int:
    """The ``vtcompress run`` job on the image and question the command line chose
    (:func:`~vtcompress.integrations.cli.usage.choose_input`); raises UsageError (one line, exit 2)
    on bad input."""
    device = check_device(args.device)
    args.device_used = device
    given = "".join(f" --option {item}" for item in args.option or [])
    if args.method is not None:  # a bad method setting fails before the model loads
        check_method_setting(args, given)
    checkpoint = load(args, device)
    if args.method is None:
        args.method = checkpoint.spec.default_method
    options = check_method_setting(args, given)
    model, processor = checkpoint.model, checkpoint.processor
    problem = IMAGE_LIMITS.problem(*image.size, max_aspect=checkpoint.max_aspect)
    if problem:
        raise UsageError(f"{image_flag(args)}: {problem}")
    print(f"vtcompress run: model {args.model}, {args.method}, ratio {args.ratio:g}, device {device}")
    if checkpoint.random_weights:
        print(
            f"note: the tiny {checkpoint.family_name} has RANDOM weights: its answers are meaningless; token "
            f"counts, timings and FLOPs are real. For real answers: --model {checkpoint.spec.hub_example} "
            "(or a local directory)."
        )
    try:
        # A method name gets the host's defaults for it (e.g. metric="projected" without [CLS]).
        config = config_for(model, args.method, ratio=args.ratio, **options)
        compressed_model(model, config).remove()  # a host that cannot serve the method says so here
    except (TypeError, ValueError) as err:
        raise UsageError(f"--method {args.method}{given}: {err}") from None
    off = config.is_off
    changed = config.changed_options()
    if changed and not off:
        print(f"method options: {changed}")
    inputs = prompt_inputs(processor, image, question, device, DTYPES[args.dtype])
    base, comp, stats = measure(model, inputs, config, args.warmup, args.repeats, device)
    if stats is None or not stats.images:
        raise RuntimeError(f"{args.method} at ratio {args.ratio} reported no statistics")
    answers = (
        answer(model, processor, inputs, args.max_new_tokens, None),
        answer(model, processor, inputs, args.max_new_tokens, config),
    )
    views, newlines, lengths, flops, note = views_and_lengths(stats)
    report(args, described, question, answers, views, newlines, lengths, flops, note, base, comp, off)
    return 0
