"""Prefill tokens and cost of pruning inside the language model against pruning before it.

At the same kept count, a method that drops image tokens after decoder layer K (fastv, dart)
saves less prefill than one that drops them before the language model (uniform here), because
layers 0..K-1 still run on the full prompt; pyramiddrop's stages keep more tokens in its early
layers. This script prints, per method and ratio:

* image tokens kept (entering the layers after the last pruning point) and the prompt length
  entering the first and the last layer;
* prefill FLOPs relative to the uncompressed model: measured-model depth (from
  ``handle.last_stats``, every layer at the length it ran) and full depth (Vicuna-7B widths, 32
  layers, the paper's stages: FastV / DART after layer 2, PyramidDrop after 8 / 16 / 24);
* prefill wall-clock relative to the uncompressed model, measured in this run on a LLaVA-NeXT
  with random weights and a reduced decoder (``--layers``, ``--hidden``; stages scaled to its depth).

    python evals/bench_in_lm.py                       # 8 decoder layers of width 256
    python evals/bench_in_lm.py --layers 16 --repeats 5

FLOPs are analytic (2 per multiply-add, :mod:`vtcompress.flops`); times are medians of
``--repeats`` forward passes, on the machine printed first.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from types import SimpleNamespace

import torch

import vtcompress as vtc
from vtcompress.budget import keep_count
from vtcompress.flops import decoder_prefill_flops
from vtcompress.registry import make_config

RATIOS = [0.5, 0.25, 0.1, 0.05]
METHODS = ["uniform", "fastv", "dart", "pyramiddrop"]
VICUNA_7B = SimpleNamespace(
    hidden_size=4096,
    intermediate_size=11008,
    num_attention_heads=32,
    num_key_value_heads=32,
    num_hidden_layers=32,
)


def scaled_options(method: str, layers: int) -> dict:
    """The paper's stage layers scaled from 32 decoder layers to ``layers``."""
    if method in ("fastv", "dart"):
        return {"layer": max(1, round(2 * layers / 32))}
    if method == "pyramiddrop":
        return {"layers": tuple(sorted({max(1, round(k * layers / 32)) for k in (8, 16, 24)}))}
    return {}


def full_depth_flops(method: str, ratio: float, length: int, image_tokens: int) -> float:
    """Prefill FLOPs at Vicuna-7B size for a prompt of ``length`` tokens holding ``image_tokens``."""
    if method == "none":
        return decoder_prefill_flops(VICUNA_7B, length)
    config = make_config(method, ratio=ratio)
    if method == "uniform":
        return decoder_prefill_flops(VICUNA_7B, length - image_tokens + keep_count(image_tokens, ratio))
    stages = config.stages()
    bounds = [0] + [k for k, _ in stages] + [VICUNA_7B.num_hidden_layers]
    lengths = [length] + [
        length - image_tokens + config.stage_count(i, image_tokens) for i in range(len(stages))
    ]
    return sum(
        decoder_prefill_flops(VICUNA_7B, n, layers=bounds[i + 1] - bounds[i]) for i, n in enumerate(lengths)
    )


def prefill_seconds(model, inputs, repeats: int) -> float:
    times = []
    with torch.inference_mode():
        model(**inputs, use_cache=True)  # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            model(**inputs, use_cache=True)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=8, help="decoder layers of the measured model")
    parser.add_argument("--hidden", type=int, default=256, help="decoder width of the measured model")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from tests.conftest import inputs_for  # the test suite's picture and prompt
    from vtcompress.integrations.llava_next.tiny import build_tiny_llava_next

    heads = max(1, args.hidden // 64)
    model, processor = build_tiny_llava_next(
        seed=0,
        num_hidden_layers=args.layers,
        hidden_size=args.hidden,
        intermediate_size=args.hidden * 11 // 4,
        num_attention_heads=heads,
        num_key_value_heads=heads,
    )
    model.eval()
    inputs = inputs_for(processor, [(672, 672)])
    length = int(inputs["attention_mask"].sum())
    print(
        f"machine: {platform.machine()} {platform.processor() or ''}, {args.threads} thread(s), "
        f"torch {torch.__version__}; LLaVA-NeXT random weights, decoder {args.layers} x {args.hidden}, "
        f"one 672x672 image, prompt {length} tokens"
    )
    base_seconds = prefill_seconds(model, inputs, args.repeats)
    print(
        f"{'method':<12}{'ratio':>6}{'kept':>6}{'first':>7}{'last':>7}"
        f"{'FLOPs (run)':>13}{'FLOPs (7B)':>12}{'time':>8}  stages"
    )
    cfg = model.config.text_config
    base_flops = decoder_prefill_flops(cfg, length)
    for method in METHODS:
        for ratio in RATIOS:
            options = scaled_options(method, args.layers)
            handle = vtc.compress(model, method, ratio=ratio, **options)
            seconds = prefill_seconds(model, inputs, args.repeats)
            stats = handle.last_stats
            image, sample = stats.images[0], stats.samples[0]
            stages = getattr(handle.config, "stages", lambda: [])()
            handle.remove()
            first = sample.length_before if stages else sample.length_after
            full = full_depth_flops(method, ratio, length, image.tokens_before)
            print(
                f"{method:<12}{ratio:>6g}{image.tokens_after:>6}{first:>7}{sample.length_after:>7}"
                f"{sample.prefill_flops_after / base_flops:>13.3f}"
                f"{full / full_depth_flops('none', 1.0, length, image.tokens_before):>12.3f}"
                f"{seconds / base_seconds:>8.3f}  {stages or 'before the LM'}"
            )
    print(
        "kept: image tokens after the last pruning point; first / last: prompt length entering the "
        "first / last decoder layer; FLOPs and time relative to the uncompressed prefill."
    )


if __name__ == "__main__":
    main()
