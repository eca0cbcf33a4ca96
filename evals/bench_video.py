"""Video compressors: cost per clip and prefill tokens per clip vs ratio and frame count.

Clips are seeded random features shaped as the models give them: LLaVA-OneVision's pooled frames
(14 x 14 = 196 tokens, 896 channels for the 0.5B model's language width) or Qwen2.5-VL's temporal
patches (a 448 x 448 video: 16 x 16 = 256 tokens, 3584 channels for 7B). Each method runs on one
clip at a time (``vtcompress.video.compress_clip``); the table gives the median wall time of
``--repeats`` runs and the tokens the clip keeps, i.e. the clip's share of the prefill.

    python evals/bench_video.py                            # OneVision shape, CPU
    python evals/bench_video.py --tokens 256 --dim 3584    # Qwen2.5-VL 7B shape
    python evals/bench_video.py --device cuda --dtype bfloat16

Everything printed is measured in this run, on the machine named in the header.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from vtcompress.registry import get_method, make_config
from vtcompress.tokens import ImageTokens
from vtcompress.video import VideoLayout, compress_clip

METHODS = ["vidcom2", "vidcom2-paper", "evs", "dycoke_ttm", "visionzip_video", "uniform"]


def config(name: str, ratio: float):
    if name == "vidcom2-paper":
        return make_config("vidcom2", ratio=ratio, allocation="paper")
    return make_config(name, ratio=ratio)


def measure(clip: ImageTokens, name: str, ratio: float, repeats: int) -> tuple[float, int]:
    """Median seconds per clip and tokens kept."""
    cfg = config(name, ratio)
    method = get_method(cfg.method)
    times, kept = [], 0
    for _ in range(repeats + 1):  # one warm-up run
        if clip.features.is_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        outs = compress_clip(method, cfg, clip)
        if clip.features.is_cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        kept = sum(o.num_kept for o in outs)
    return statistics.median(times[1:]), kept


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.1, 0.25, 0.5])
    parser.add_argument("--tokens", type=int, default=196, help="tokens per frame (a square grid)")
    parser.add_argument("--dim", type=int, default=896, help="feature channels")
    parser.add_argument("--methods", nargs="+", default=METHODS)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args(argv)
    side = int(round(args.tokens**0.5))
    if side * side != args.tokens:
        parser.error("--tokens must be a square number (a square grid of tokens a frame)")
    dtype = getattr(torch, args.dtype)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.machine()} CPU"
    print(
        f"# video compressors: {name}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"{args.dtype}, {args.tokens} tokens a frame, {args.dim} channels"
    )
    print("| method | frames | ratio | tokens before | tokens kept | kept fraction | ms per clip |")
    print("|---|---|---|---|---|---|---|")
    for frames in args.frames:
        gen = torch.Generator().manual_seed(frames)
        x = torch.randn(frames, args.tokens, args.dim, generator=gen).to(device, dtype)
        clip = ImageTokens(x, VideoLayout(frames, (side, side)))
        for ratio in args.ratios:
            for method in args.methods:
                seconds, kept = measure(clip, method, ratio, args.repeats)
                n = frames * args.tokens
                print(
                    f"| {method} | {frames} | {ratio:g} | {n} | {kept} | {kept / n:.4f} | {seconds * 1e3:.2f} |"
                )


if __name__ == "__main__":
    main()
