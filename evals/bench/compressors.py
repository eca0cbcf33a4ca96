"""Where a compressor's cost goes: every registered method alone, on synthetic LLaVA-NeXT-7B inputs.

    python -m evals.bench.compressors                        # CPU: time, operations, host reads
    python -m evals.bench.compressors --emulate              # + what a GPU would see, counted on CPU
    python -m evals.bench.compressors --device cuda --profile  # GPU: + CUDA kernels and syncs, measured

For each method, a batch of images (thumbnail + crops, 24x24 tokens a view, projected features
of width ``--width``, CLIP ViT-L [CLS] queries / keys of the layers the method asks for) goes
through the method and :func:`vtcompress.packing.pack_views`, exactly the work the LLaVA-NeXT
adapter times as compression. Printed per method (counts per image):

* time per batch (median wall and process CPU time);
* ops: aten operations (torch dispatch); kernels: the same without pure view operations (each
  one a kernel launch on a GPU); host reads: ``.item()`` / ``.tolist()`` / ``int(tensor)``,
  each one a device synchronisation on a GPU;
* ``--emulate``: the accelerator is emulated on the CPU (the image's tensors report device
  ``meta`` and run on the CPU), so operations are split as a GPU would see them: device ops
  (launches), syncs (device -> host reads, including data-dependent output sizes such as
  ``nonzero``), h2d (host -> device copies), host ops (work on CPU tensors: no launch, no sync).
  The emulated pass uses the torch reference of the similarity kernels (Triton needs a GPU);
* ``--device cuda``: CUDA kernels and memcpys (profiler's CUDA activity) and syncs
  (``torch.cuda.set_sync_debug_mode``), measured;
* ``--profile``: the operations that take the time (profiler table).

The inputs are random: the cost of these methods depends on the shapes, not on the values
(and, for data-dependent budgets, slightly on counts).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
import warnings
from collections import Counter
from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

import vtcompress as vtc
from vtcompress.integrations.llava_next.layout import AnyResLayout
from vtcompress.kernels import force_reference
from vtcompress.packing import pack_images, pack_views
from vtcompress.pipeline import compress_images
from vtcompress.registry import get_method, make_config
from vtcompress.tokens import ImageTokens, LayerQK

# LLaVA-NeXT-7B: CLIP ViT-L/14-336 (24 layers, 16 heads of 64, width 1024), decoder width 4096.
SIDE, VIEW_PX, PATCH_PX, LAYERS, HEADS, HEAD_DIM, VISION_WIDTH = 24, 336, 14, 24, 16, 64, 1024
# LLaVA-NeXT projects hidden state -2, the input of the last layer: that layer's [CLS] scores it.
SCORE_LAYER = LAYERS - 1
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

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


# --- emulated accelerator ---------------------------------------------------------------------
# Ops whose output size depends on the data: on a GPU each waits for the device.
DATA_DEPENDENT_SHAPE = {"nonzero", "masked_select", "unique", "_unique2", "unique_consecutive"}
NO_KERNEL = {"empty", "empty_like", "empty_strided", "new_empty", "_unsafe_view", "lift_fresh", "detach"}
# The wrapper says "meta": a device type with a (no-op) device guard on CPU-only builds.
EMULATED = torch.device("meta")


class DeviceTensor(torch.Tensor):
    """A CPU tensor that says it lives on the emulated accelerator (device ``meta``)."""

    @staticmethod
    def __new__(cls, inner: torch.Tensor):
        out = torch.Tensor._make_wrapper_subclass(
            cls, inner.shape, dtype=inner.dtype, device=EMULATED, strides=inner.stride(), requires_grad=False
        )
        out.inner = inner
        return out

    def __repr__(self) -> str:
        return f"DeviceTensor({self.inner!r})"

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        return Emulator.active.__torch_dispatch__(func, types, args, kwargs)

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (torch.Tensor.tolist, torch.Tensor.numpy):  # reads that bypass dispatch
            Emulator.active.syncs += 1
            return getattr(args[0].inner, func.__name__)()
        with torch._C.DisableTorchFunctionSubclass():
            return func(*args, **kwargs)


def _on_device(x: Any) -> bool:
    return isinstance(x, DeviceTensor)


def _to_device(out: Any) -> Any:
    return tree_map(lambda t: DeviceTensor(t) if isinstance(t, torch.Tensor) else t, out)


class Emulator(TorchDispatchMode):
    """Runs every op on CPU, counting what the accelerator would see (``with Emulator() as e:``)."""

    active: Emulator

    def __init__(self) -> None:
        super().__init__()
        self.device_ops: Counter[str] = Counter()
        self.host_ops = 0
        self.syncs = 0
        self.h2d = 0

    def __enter__(self) -> Emulator:
        Emulator.active = self
        super().__enter__()
        return self

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        flat = [*args, *kwargs.values()]
        nested = [t for a in flat if isinstance(a, (list, tuple)) for t in a]
        on_dev = any(_on_device(a) for a in flat + nested)
        dev_kw = kwargs.get("device")
        to_dev = dev_kw is not None and torch.device(dev_kw).type == EMULATED.type
        name = func.overloadpacket.__name__
        if dev_kw is not None:
            kwargs = {**kwargs, "device": torch.device("cpu")}
        un_args, un_kwargs = tree_map(lambda t: t.inner if _on_device(t) else t, (args, kwargs))
        out = func(*un_args, **un_kwargs)
        if name == "_local_scalar_dense":  # .item(), int(t), bool(t)
            self.syncs += int(on_dev)
            return out
        if on_dev and name in DATA_DEPENDENT_SHAPE:
            self.syncs += 1  # the output size is read back from the device
        crossing = None  # "d2h" / "h2d" for copies between host and device
        if name == "_to_copy" and dev_kw is not None and on_dev != to_dev:
            crossing = "d2h" if on_dev else "h2d"
        elif name == "copy_" and _on_device(args[0]) != _on_device(args[1]):
            crossing = "h2d" if _on_device(args[0]) else "d2h"
        if crossing == "d2h":
            self.syncs += 1
            return out
        if crossing == "h2d":
            self.h2d += 1
            return _to_device(out)
        if on_dev or to_dev:
            if not func.is_view and name not in NO_KERNEL:
                self.device_ops[name] += 1
            return _to_device(out)
        if not func.is_view and name not in NO_KERNEL:
            self.host_ops += 1
        return out


# --- inputs and the measured work ---------------------------------------------------------------
def synthetic_images(
    method: str,
    ratio: float,
    batch: int,
    grid: tuple[int, int],
    width: int,
    dtype: torch.dtype = torch.float32,
    place: Callable[[torch.Tensor], torch.Tensor] = lambda t: t,
    seed: int = 0,
) -> tuple[Any, list[ImageTokens], torch.Tensor]:
    """The config, ``batch`` ImageTokens of a (rows*336) x (cols*336) image and the newline embedding.

    Every tensor (features [V, 576, width], [CLS] q [V, 16, 64], keys [V, 577, 16, 64], hidden
    states [V, 577, 1024]) is random, cast to ``dtype`` and passed through ``place`` (to a device).
    """
    config = make_config(method, ratio=ratio)
    layout = AnyResLayout.for_image(
        (grid[0] * VIEW_PX, grid[1] * VIEW_PX), [[grid[0] * VIEW_PX, grid[1] * VIEW_PX]], VIEW_PX, PATCH_PX
    )
    views, n = layout.num_views, SIDE * SIDE
    qk_layers, hidden_layers = config.capture_layers(SCORE_LAYER, LAYERS)
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=gen).to(dtype)

    images = []
    for index in range(batch):
        qk = {
            i: LayerQK(rand(views, HEADS, HEAD_DIM), rand(views, 1 + n, HEADS, HEAD_DIM), HEAD_DIM**-0.5)
            for i in qk_layers
        }
        hidden = {i: rand(views, 1 + n, VISION_WIDTH) for i in hidden_layers}
        images.append(ImageTokens(rand(views, n, width), layout, qk, hidden, index, SCORE_LAYER, LAYERS))
    return config, as_slices_of_one_batch(images, place), place(rand(width))


def as_slices_of_one_batch(
    images: list[ImageTokens], place: Callable[[torch.Tensor], torch.Tensor]
) -> list[ImageTokens]:
    """The images' tensors as consecutive slices of one tensor per kind, as a host hands them over
    (the tower runs every view of the batch at once; the host slices each image's views)."""
    v = images[0].num_views

    def sliced(parts: list[torch.Tensor]) -> list[torch.Tensor]:
        whole = place(torch.cat(parts))
        if isinstance(whole, DeviceTensor):  # slice the wrapped tensor (no emulator runs yet)
            return [DeviceTensor(whole.inner[i * v : (i + 1) * v]) for i in range(len(parts))]
        return [whole[i * v : (i + 1) * v] for i in range(len(parts))]

    feats = sliced([t.features for t in images])
    qs = {i: sliced([t.qk[i].q_cls for t in images]) for i in images[0].qk}
    ks = {i: sliced([t.qk[i].keys for t in images]) for i in images[0].qk}
    hidden = {i: sliced([t.hidden[i] for t in images]) for i in images[0].hidden}
    return [
        ImageTokens(
            feats[b],
            t.layout,
            {i: LayerQK(qs[i][b], ks[i][b], t.qk[i].scale) for i in t.qk},
            {i: hidden[i][b] for i in t.hidden},
            t.index,
            t.score_layer,
            t.num_layers,
        )
        for b, t in enumerate(images)
    ]


def compress_batch(
    method: str, config: Any, images: list[ImageTokens], newline: torch.Tensor, path: str = "batched"
) -> None:
    """What the adapter times: the method, then packing its output.

    path "per-image": the method's per-image function and :func:`pack_views`, image by image;
    "batched": :func:`~vtcompress.pipeline.compress_images` (the method's batched path where it
    has one, for the whole batch) and :func:`pack_images`.
    """
    spec = get_method(method)
    policy = getattr(config, "newline", "unpadded")
    if path == "batched":
        pack_images(compress_images(spec, config, images), newline, policy)
        return
    for tokens in images:
        outs = spec.compress(tokens, config)
        pack_views(tokens.layout, [o.positions for o in outs], [o.features for o in outs], newline, policy)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --- measurements -----------------------------------------------------------------------------
def timings(args: argparse.Namespace, work: Callable[[], None], device: torch.device) -> dict:
    """Median wall and process-CPU milliseconds per batch over ``args.repeats`` runs (after a warm-up)."""
    work()
    times, cpu_times = [], []
    for _ in range(args.repeats):
        _sync(device)
        wall, cpu = time.perf_counter(), time.process_time()
        work()
        _sync(device)
        times.append(time.perf_counter() - wall)
        cpu_times.append(time.process_time() - cpu)
    return {
        "ms_per_batch": statistics.median(times) * 1e3,
        "cpu_ms_per_batch": statistics.median(cpu_times) * 1e3,
    }


def dispatch_counts(work: Callable[[], None], batch: int) -> dict:
    """Aten operations, kernel-launching ones and host reads, per image."""
    counter = OpCounter()
    reads = Counter()
    tolist = torch.Tensor.tolist

    def counted_tolist(self, *a, **k):
        reads["tolist"] += 1
        return tolist(self, *a, **k)

    torch.Tensor.tolist = counted_tolist
    try:
        with counter:
            work()
    finally:
        torch.Tensor.tolist = tolist
    reads["item"] = counter.ops.get("aten._local_scalar_dense", 0)
    kernels = Counter({k: v for k, v in counter.ops.items() if k.split(".", 1)[-1] not in VIEW_OPS})
    return {
        "ops_per_image": sum(counter.ops.values()) / batch,
        "kernel_ops_per_image": sum(kernels.values()) / batch,
        "host_reads_per_image": (reads["tolist"] + reads["item"]) / batch,
        "top_ops": [(name, count / batch) for name, count in kernels.most_common(6)],
    }


def emulated_counts(method: str, args: argparse.Namespace, dtype: torch.dtype, path: str) -> dict:
    """Device ops, syncs, host -> device copies and host ops per image on the emulated accelerator."""
    config, images, newline = synthetic_images(
        method, args.ratio, args.batch, args.grid, args.width, dtype, DeviceTensor
    )
    with force_reference():
        with Emulator():
            compress_batch(method, config, images, newline, path)  # warm caches, as in a running model
        with Emulator() as mode:
            compress_batch(method, config, images, newline, path)
    return {
        "emulated_device_ops_per_image": sum(mode.device_ops.values()) / args.batch,
        "emulated_syncs_per_image": mode.syncs / args.batch,
        "emulated_h2d_per_image": mode.h2d / args.batch,
        "emulated_host_ops_per_image": mode.host_ops / args.batch,
        "emulated_top_device_ops": [(n, c / args.batch) for n, c in mode.device_ops.most_common(4)],
    }


def cuda_counts(work: Callable[[], None], batch: int) -> dict:
    """CUDA kernels + memcpys (profiler) and synchronisations (sync debug mode), per image."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        work()
        torch.cuda.synchronize()
    kernels = sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            work()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    syncs = sum("synchroniz" in str(w.message) for w in caught)
    return {"cuda_kernels_per_image": kernels / batch, "cuda_syncs_per_image": syncs / batch}


def profile_table(work: Callable[[], None], device: torch.device) -> str:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        work()
        _sync(device)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=10)


def measure(
    method: str, args: argparse.Namespace, device: torch.device, path: str = "batched"
) -> dict[str, Any]:
    """One method's row: timings, dispatch counts, and the optional emulated / CUDA / profile parts."""
    dtype = DTYPES[args.dtype]
    config, images, newline = synthetic_images(
        method, args.ratio, args.batch, args.grid, args.width, dtype, lambda t: t.to(device)
    )

    def work() -> None:
        with force_reference() if args.reference_kernels else contextlib.nullcontext():
            compress_batch(method, config, images, newline, path)

    row: dict[str, Any] = {"method": method, "path": path, **timings(args, work, device)}
    row |= dispatch_counts(work, args.batch)
    if args.emulate:
        try:
            row |= emulated_counts(method, args, dtype, path)
        except RuntimeError as err:  # e.g. torch.tensor(..., device=x.device) escapes the wrapper
            row["emulation_error"] = str(err).splitlines()[0][:80]
    if device.type == "cuda":
        row |= cuda_counts(work, args.batch)
    if args.profile:
        row["profile"] = profile_table(work, device)
    return row


# --- output and CLI -----------------------------------------------------------------------------
def _top(pairs: list[tuple[str, float]]) -> str:
    return ", ".join(f"{name.removeprefix('aten.')} {count:g}" for name, count in pairs)


def table(rows: list[dict[str, Any]]) -> str:
    """The rows as a markdown table (emulated and CUDA columns where measured)."""
    header = [
        "method",
        "path",
        "ms / batch",
        "CPU ms / batch",
        "ops / img",
        "kernels / img",
        "host reads / img",
    ]
    emulated = any("emulated_syncs_per_image" in r or "emulation_error" in r for r in rows)
    cuda = any("cuda_kernels_per_image" in r for r in rows)
    if emulated:
        header += ["emulated device ops", "emulated syncs", "emulated h2d", "emulated host ops"]
    if cuda:
        header += ["CUDA kernels + memcpys / img", "CUDA syncs / img"]
    header.append("most frequent kernels per image")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [
            r["method"],
            r.get("path", "per-image"),
            f"{r['ms_per_batch']:.1f}",
            f"{r['cpu_ms_per_batch']:.1f}",
            f"{r['ops_per_image']:.0f}",
            f"{r['kernel_ops_per_image']:.0f}",
            f"{r['host_reads_per_image']:.0f}",
        ]
        if emulated:
            if "emulation_error" in r:
                cells += [
                    f"n/a: the emulation cannot follow this method ({r['emulation_error']})",
                    "",
                    "",
                    "",
                ]
            else:
                keys = ("device_ops", "syncs", "h2d", "host_ops")
                cells += [f"{r[f'emulated_{k}_per_image']:.0f}" for k in keys]
        if cuda:
            cells += [f"{r['cuda_kernels_per_image']:.0f}", f"{r['cuda_syncs_per_image']:.0f}"]
        cells.append(_top(r["top_ops"]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m evals.bench.compressors", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument(
        "--methods",
        default=None,
        help="comma-separated (default: every registered image method; videos: evals/bench_video.py)",
    )
    p.add_argument("--ratio", type=float, default=0.25)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--grid", default="2x2", help="crop grid ROWSxCOLS (2x2: 5 views)")
    p.add_argument("--width", type=int, default=4096, help="projected feature width (decoder hidden size)")
    p.add_argument(
        "--dtype", default=None, choices=list(DTYPES), help="default float32 on CPU, bfloat16 on CUDA"
    )
    p.add_argument(
        "--path",
        default="batched",
        choices=["batched", "per-image", "both"],
        help="batched: the pipeline's batched path where a method has one; per-image: each image alone",
    )
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--emulate", action="store_true", help="also count what a GPU would see, on the CPU")
    p.add_argument("--reference-kernels", action="store_true",
                   help="time the torch reference of the similarity kernels, not Triton")  # fmt: skip
    p.add_argument("--profile", action="store_true", help="print the operations that take the time")
    args = p.parse_args(argv)
    try:
        args.grid = tuple(int(x) for x in args.grid.lower().split("x"))
    except ValueError:
        p.error(f"--grid {args.grid!r}: expected ROWSxCOLS, e.g. 2x2")
    args.dtype = args.dtype or ("bfloat16" if args.device == "cuda" else "float32")
    return args


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible to torch (drop --device for the CPU)")
    methods = args.methods.split(",") if args.methods else vtc.available_methods("image")
    for m in methods:
        get_method(m)  # unknown names fail now, listing the known ones
    where = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU, {torch.get_num_threads()} thread(s)"
    )
    print(
        f"compressors alone: batch {args.batch}, grid {args.grid[0]}x{args.grid[1]} "
        f"({1 + args.grid[0] * args.grid[1]} views of 576 tokens), width {args.width} {args.dtype}, "
        f"r={args.ratio:g}; {where}; torch {torch.__version__}",
        flush=True,
    )
    paths = ["per-image", "batched"] if args.path == "both" else [args.path]
    rows = []
    for method in methods:
        for path in paths:
            rows.append(measure(method, args, device, path))
        if args.profile:
            print(f"{method}:\n{rows[-1]['profile']}", flush=True)
    print(table(rows))
    return rows


if __name__ == "__main__":
    main()
