"""Where a compressor's time goes: every registered method alone, on synthetic LLaVA-NeXT-7B inputs.

    python -m evals.bench.compressors                    # CPU, batch 8, 2x2 grid, r = 0.25
    python -m evals.bench.compressors --device cuda --profile

For each method, a batch of images (thumbnail + crops, 24x24 tokens a view, projected features
of width 4096, CLIP ViT-L [CLS] queries / keys of the layers the method asks for) goes through
the method and :func:`vtcompress.layout.pack_views`, exactly the work the LLaVA-NeXT adapter
times as compression. Printed per method: time per batch (median), tensor operations per image
(each one a kernel launch on a GPU), host reads per image (``.item()`` / ``.tolist()`` /
``int(tensor)``: each one a device synchronisation on a GPU), and with ``--profile`` the
operations that take the time. The inputs are random: the cost of these methods does not
depend on the values, only on the shapes (and, for data-dependent budgets, slightly on counts).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import Counter
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

import vtcompress as vtc
from vtcompress.integrations.llava_next.layout import AnyResLayout, pack_views
from vtcompress.registry import get_method, make_config
from vtcompress.tokens import ImageTokens, LayerQK

# LLaVA-NeXT-7B: CLIP ViT-L/14-336 (24 layers, 16 heads of 64, width 1024), decoder width 4096.
SIDE, VIEW_PX, PATCH_PX, LAYERS, HEADS, HEAD_DIM, VISION_WIDTH = 24, 336, 14, 24, 16, 64, 1024


# Operations that only make a new view of existing memory (no kernel on a GPU).
VIEW_OPS = {
    "view", "_unsafe_view", "select", "slice", "unsqueeze", "squeeze", "expand", "permute", "transpose",
    "t", "as_strided", "alias", "detach", "unbind", "split", "split_with_sizes", "narrow", "lift_fresh",
}  # fmt: skip


class OpCounter(TorchDispatchMode):
    """Counts aten operations; ``_local_scalar_dense`` is a read of a value back to the host."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


def synthetic_images(
    method: str,
    ratio: float,
    batch: int,
    grid: tuple[int, int],
    width: int,
    device: torch.device,
    seed: int = 0,
) -> tuple[Any, list[ImageTokens]]:
    """The config and ``batch`` ImageTokens of a (rows*336) x (cols*336) image."""
    config = make_config(method, ratio=ratio)
    layout = AnyResLayout.for_image(
        (grid[0] * VIEW_PX, grid[1] * VIEW_PX), [[grid[0] * VIEW_PX, grid[1] * VIEW_PX]], VIEW_PX, PATCH_PX
    )
    views, n = layout.num_views, SIDE * SIDE
    qk_layers, hidden_layers = config.capture_layers(LAYERS - 1, LAYERS)
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=gen).to(device)

    images = []
    for index in range(batch):
        qk = {
            i: LayerQK(rand(views, HEADS, HEAD_DIM), rand(views, 1 + n, HEADS, HEAD_DIM), HEAD_DIM**-0.5)
            for i in qk_layers
        }
        hidden = {i: rand(views, 1 + n, VISION_WIDTH) for i in hidden_layers}
        images.append(ImageTokens(rand(views, n, width), layout, qk, hidden, index, LAYERS - 1, LAYERS))
    return config, images


def compress_batch(method: str, config: Any, images: list[ImageTokens], newline: torch.Tensor) -> None:
    spec = get_method(method)
    for tokens in images:
        outs = spec.compress(tokens, config)
        pack_views(
            tokens.layout, [o.positions for o in outs], [o.features for o in outs], newline, "unpadded"
        )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(method: str, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    config, images = synthetic_images(method, args.ratio, args.batch, args.grid, args.width, device)
    newline = torch.randn(args.width, device=device)
    compress_batch(method, config, images, newline)  # warm-up
    times, cpu_times = [], []
    for _ in range(args.repeats):
        _sync(device)
        wall, cpu = time.perf_counter(), time.process_time()
        compress_batch(method, config, images, newline)
        _sync(device)
        times.append(time.perf_counter() - wall)
        cpu_times.append(time.process_time() - cpu)
    counter = OpCounter()
    reads = Counter()
    tolist = torch.Tensor.tolist

    def counted_tolist(self, *a, **k):
        reads["tolist"] += 1
        return tolist(self, *a, **k)

    torch.Tensor.tolist = counted_tolist
    try:
        with counter:
            compress_batch(method, config, images, newline)
    finally:
        torch.Tensor.tolist = tolist
    reads["item"] = counter.ops.get("aten._local_scalar_dense", 0)
    kernels = Counter({k: v for k, v in counter.ops.items() if k.split(".", 1)[-1] not in VIEW_OPS})
    row = {
        "method": method,
        "ms_per_batch": statistics.median(times) * 1e3,
        "cpu_ms_per_batch": statistics.median(cpu_times) * 1e3,
        "ops_per_image": sum(counter.ops.values()) / args.batch,
        "kernel_ops_per_image": sum(kernels.values()) / args.batch,
        "host_reads_per_image": (reads["tolist"] + reads["item"]) / args.batch,
        "top_ops": kernels.most_common(6),
    }
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=activities) as prof:
            compress_batch(method, config, images, newline)
            _sync(device)
        key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        row["profile"] = prof.key_averages().table(sort_by=key, row_limit=10)
    return row


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(
        prog="python -m evals.bench.compressors", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--methods", default=None, help="comma-separated (default: every registered method)")
    p.add_argument("--ratio", type=float, default=0.25)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--grid", default="2x2", help="crop grid ROWSxCOLS (2x2: 5 views)")
    p.add_argument("--width", type=int, default=4096, help="projected feature width (decoder hidden size)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--profile", action="store_true", help="print the operations that take the time")
    args = p.parse_args(argv)
    args.grid = tuple(int(x) for x in args.grid.lower().split("x"))
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    methods = args.methods.split(",") if args.methods else vtc.available_methods()
    where = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU, {torch.get_num_threads()} thread(s)"
    )
    print(
        f"compressors alone: batch {args.batch}, grid {args.grid[0]}x{args.grid[1]} "
        f"({1 + args.grid[0] * args.grid[1]} views of 576 tokens), width {args.width}, r={args.ratio:g}; "
        f"{where}; torch {torch.__version__}"
    )
    print(
        f"{'method':>12} {'ms/batch':>9} {'CPU ms':>8} {'ops/img':>8} {'kernels/img':>12} {'host reads/img':>15}"
        "  most frequent kernels per image"
    )
    rows = []
    for method in methods:
        row = measure(method, args, device)
        rows.append(row)
        top = ", ".join(f"{name} {count // args.batch}" for name, count in row["top_ops"])
        print(
            f"{method:>12} {row['ms_per_batch']:9.1f} {row['cpu_ms_per_batch']:8.1f} "
            f"{row['ops_per_image']:8.0f} {row['kernel_ops_per_image']:12.0f} "
            f"{row['host_reads_per_image']:15.0f}  {top}"
        )
        if args.profile:
            print(row["profile"])
    return rows


if __name__ == "__main__":
    main()
