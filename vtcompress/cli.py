"""``vtcompress`` command line: ``run`` answers one question about one image, with and without
compression, and prints the answer, visual tokens before/after and prefill times."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

import torch


def _prefill_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Best-of-``repeats`` wall time of ``fn`` (a forward over the prompt)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def cmd_run(args: argparse.Namespace) -> int:
    from PIL import Image

    from vtcompress.api import compress
    from vtcompress.integrations.llava_next.loader import TINY, resolve_model_path
    from vtcompress.integrations.llava_next.tiny import is_random_tiny

    try:
        image = Image.open(args.image).convert("RGB")
    except (OSError, ValueError) as err:
        print(f"error: cannot read image {args.image!r}: {err}", file=sys.stderr)
        return 2
    if not args.question.strip():
        print("error: --question is empty", file=sys.stderr)
        return 2

    from transformers import AutoProcessor, LlavaNextForConditionalGeneration

    path = resolve_model_path(args.model)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[args.dtype]
    model = LlavaNextForConditionalGeneration.from_pretrained(path, dtype=dtype).to(args.device).eval()
    processor = AutoProcessor.from_pretrained(path)
    if args.model == TINY or is_random_tiny(path):
        print(
            "note: model is the built-in tiny LLaVA-NeXT with RANDOM weights: its answer is meaningless; "
            "pass --model llava-hf/llava-v1.6-mistral-7b-hf (or a local path) for real answers."
        )
    conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": args.question}]}]
    prompt = processor.apply_chat_template(conversation, add_generation_prompt=True)
    inputs = processor(images=image, text=prompt, return_tensors="pt").to(args.device)
    inputs["pixel_values"] = inputs["pixel_values"].to(dtype)

    with torch.inference_mode():
        base_time = _prefill_seconds(lambda: model(**inputs), args.repeats)
        handle = compress(model, args.method, ratio=args.ratio)
        comp_time = _prefill_seconds(lambda: model(**inputs), args.repeats)
        out = model.generate(**inputs, max_new_tokens=args.max_new_tokens, do_sample=False)
    answer = processor.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()
    stats = handle.last_stats
    image_stats = stats.images[0]
    sample = stats.samples[0]
    print(f"model: {args.model}  method: {args.method}  ratio: {args.ratio}")
    print(f"answer: {answer!r}")
    print(
        f"visual tokens: {image_stats.tokens_before} -> {image_stats.tokens_after} "
        f"({image_stats.kept_fraction:.1%} kept; newlines {image_stats.newlines_before} -> {image_stats.newlines_after})"
        + (f"  [{image_stats.note}]" if image_stats.note else "")
    )
    for view in image_stats.views:
        print(f"  {view.name:>10}: {view.original} -> {view.kept}")
    print(f"prompt length: {sample.length_before} -> {sample.length_after} tokens")
    print(
        f"prefill time ({args.device}, best of {args.repeats}): {base_time * 1e3:.1f} ms uncompressed, "
        f"{comp_time * 1e3:.1f} ms compressed ({comp_time / base_time:.2f}x); "
        f"compressor {image_stats.seconds * 1e3:.2f} ms"
    )
    print(
        f"decoder prefill FLOPs (analytic): {sample.prefill_flops_before / 1e9:.2f} -> "
        f"{sample.prefill_flops_after / 1e9:.2f} GFLOPs"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    from vtcompress.integrations.llava_next.loader import TINY
    from vtcompress.registry import available_methods

    parser = argparse.ArgumentParser(prog="vtcompress", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="answer a question about an image, compressed vs uncompressed")
    run.add_argument("--image", required=True, help="path to an image file")
    run.add_argument("--question", required=True)
    run.add_argument(
        "--model", default=TINY, help="LLaVA-NeXT hub id or local path (default: offline tiny model)"
    )
    run.add_argument("--method", default="globalcom2", choices=available_methods())
    run.add_argument("--ratio", type=float, default=0.25, help="kept fraction of visual tokens, in (0, 1]")
    run.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    run.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    run.add_argument("--max-new-tokens", type=int, default=32)
    run.add_argument("--repeats", type=int, default=2, help="prefill timings take the best of this many runs")
    run.set_defaults(func=cmd_run)
    try:
        from vtcompress.integrations.demo import add_demo_subcommand
    except ImportError:
        pass
    else:
        add_demo_subcommand(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "ratio", None) is not None:
        from vtcompress.config import check_ratio

        try:
            check_ratio(args.ratio)
        except ValueError as err:
            parser.error(str(err))
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
