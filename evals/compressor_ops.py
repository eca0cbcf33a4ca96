"""Per-image launch and sync counts of each compressor plus packing (what the adapter times).

For one 672x672 LLaVA-NeXT image (thumbnail + 2x2 crops = 5 views of 24x24 tokens) at
LLaVA-NeXT-7B feature width (4096, bf16; CLIP-L/14-336 q/k and hidden states), this runs
``method.compress`` + ``pack_views`` -- the per-image work that ``compress_seconds`` times -- and
prints, per method:

* device ops: aten ops that would launch a kernel on the accelerator (view ops and bare
  allocations excluded), copies between host and device included;
* host ops: aten ops on CPU tensors (cheap: no launch, no sync);
* syncs: device -> host reads (``.item()``, ``.tolist()``, ``int()``/``bool()`` of a tensor,
  ``.cpu()``), each a full stall of the launch queue;
* h2d: host -> device copies;
* profiler ops: every aten op torch.profiler (CPU activity) records when everything runs on CPU.

Without a GPU the accelerator is emulated: the image's tensors are wrapped in a tensor subclass
that reports ``device="meta"`` and runs each op on CPU, so device ops and syncs are counted
exactly as the code would issue them on a GPU. With ``--cuda`` (and a GPU) the real device is
used instead: kernels and memcpys come from the profiler's CUDA activity, syncs from
``torch.cuda.set_sync_debug_mode``, and the median wall time per image is printed.

Usage: ``python evals/compressor_ops.py [--cuda] [--methods globalcom2,uniform,...] [--ratio 0.25]``
"""

from __future__ import annotations

import argparse
import collections
import statistics
import time
import warnings

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

from vtcompress.integrations.llava_next.layout import AnyResLayout, pack_views
from vtcompress.kernels import force_reference
from vtcompress.registry import get_method
from vtcompress.tokens import ImageTokens, LayerQK

METHODS = ("globalcom2", "random", "uniform", "fastervlm", "tokencorr", "pitome", "tome")
# Ops whose output size depends on the data: on CUDA each waits for the device.
DATA_DEPENDENT_SHAPE = {"nonzero", "masked_select", "unique", "_unique2", "unique_consecutive"}
NO_KERNEL = {"empty", "empty_like", "empty_strided", "new_empty", "_unsafe_view", "lift_fresh", "detach"}
# The wrapper says "meta": a device type with a (no-op) device guard on CPU-only builds.
DEVICE = torch.device("meta")


class DeviceTensor(torch.Tensor):
    """A CPU tensor that says it lives on the emulated accelerator (device ``meta``)."""

    @staticmethod
    def __new__(cls, inner: torch.Tensor):
        out = torch.Tensor._make_wrapper_subclass(
            cls, inner.shape, dtype=inner.dtype, device=DEVICE, strides=inner.stride(), requires_grad=False
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
        if func in (torch.Tensor.tolist, torch.Tensor.numpy):
            Emulator.active.syncs += 1
            return getattr(args[0].inner, func.__name__)()
        with torch._C.DisableTorchFunctionSubclass():
            return func(*args, **kwargs)


def _is_dev(x) -> bool:
    return isinstance(x, DeviceTensor)


class Emulator(TorchDispatchMode):
    """Runs every op on CPU, counting what the accelerator would see."""

    active: Emulator

    def __init__(self) -> None:
        super().__init__()
        self.device_ops = collections.Counter()
        self.host_ops = 0
        self.syncs = 0
        self.h2d = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        flat = [*args, *kwargs.values()]
        nested = [t for a in flat if isinstance(a, (list, tuple)) for t in a]
        on_dev = any(_is_dev(a) for a in flat + nested)
        dev_kw = kwargs.get("device")
        to_dev = dev_kw is not None and torch.device(dev_kw).type == "meta"
        name = func.overloadpacket.__name__
        if dev_kw is not None:
            kwargs = {**kwargs, "device": torch.device("cpu")}
        un_args, un_kwargs = tree_map(lambda t: t.inner if _is_dev(t) else t, (args, kwargs))
        out = func(*un_args, **un_kwargs)
        if name == "_local_scalar_dense":
            self.syncs += int(on_dev)
            return out
        if on_dev and name in DATA_DEPENDENT_SHAPE:
            self.syncs += 1  # the output size is read back from the device
        crossing = None  # "d2h" / "h2d" for copies between host and device
        if name == "_to_copy" and dev_kw is not None and on_dev != to_dev:
            crossing = "d2h" if on_dev else "h2d"
        elif name == "copy_" and _is_dev(args[0]) != _is_dev(args[1]):
            crossing = "h2d" if _is_dev(args[0]) else "d2h"
        if crossing == "d2h":
            self.syncs += 1  # device -> host read
            return out
        if crossing == "h2d":
            self.h2d += 1
            return tree_map(lambda t: DeviceTensor(t) if isinstance(t, torch.Tensor) else t, out)
        if on_dev or to_dev:
            if not func.is_view and name not in NO_KERNEL:
                self.device_ops[name] += 1
            return tree_map(lambda t: DeviceTensor(t) if isinstance(t, torch.Tensor) else t, out)
        if not func.is_view and name not in NO_KERNEL:
            self.host_ops += 1
        return out


def image_tokens(name: str, ratio: float, wrap) -> tuple[ImageTokens, object, torch.Tensor]:
    """A 672x672 image's ImageTokens (5 views, 7B width) for ``name``, tensors passed through ``wrap``."""
    spec = get_method(name)
    config = spec.config_cls(ratio=ratio)
    layout = AnyResLayout.for_image(
        (672, 672), [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
    )
    gen = torch.Generator().manual_seed(0)
    views, n, d, heads, dh, width, depth = layout.num_views, layout.view_tokens, 4096, 16, 64, 1024, 24
    score_layer = depth - 2  # hidden state -2 feeds LLaVA: scored by layer 22's [CLS] query
    qk_layers, hidden_layers = config.capture_layers(score_layer, depth)
    bf16 = torch.bfloat16

    def rand(*shape):
        return wrap(torch.randn(*shape, generator=gen).to(bf16))

    qk = {i: LayerQK(rand(views, heads, dh), rand(views, 1 + n, heads, dh), dh**-0.5) for i in qk_layers}
    hidden = {i: rand(views, 1 + n, width) for i in hidden_layers}
    tokens = ImageTokens(rand(views, n, d), layout, qk, hidden, 0, score_layer, depth)
    return tokens, config, rand(d)


def run_image(name: str, tokens: ImageTokens, config, newline: torch.Tensor) -> torch.Tensor:
    """What the adapter times per image: the method, then packing."""
    outs = get_method(name).compress(tokens, config)
    policy = getattr(config, "newline", "unpadded")
    return pack_views(tokens.layout, [o.positions for o in outs], [o.features for o in outs], newline, policy)


def emulated_counts(name: str, ratio: float) -> dict:
    tokens, config, newline = image_tokens(name, ratio, DeviceTensor)
    Emulator.active = warm = Emulator()
    with warm:
        run_image(name, tokens, config, newline)  # warm caches, as in a running model
    Emulator.active = mode = Emulator()
    with mode:
        run_image(name, tokens, config, newline)
    plain, pconfig, pnewline = image_tokens(name, ratio, lambda t: t)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run_image(name, plain, pconfig, pnewline)
    aten = sum(1 for e in prof.events() if e.name.startswith("aten::"))
    return dict(
        device_ops=sum(mode.device_ops.values()),
        host_ops=mode.host_ops,
        syncs=mode.syncs,
        h2d=mode.h2d,
        profiler_ops=aten,
        top=", ".join(f"{k} {v}" for k, v in mode.device_ops.most_common(4)),
    )


def cuda_counts(name: str, ratio: float, repeats: int = 20) -> dict:
    tokens, config, newline = image_tokens(name, ratio, lambda t: t.to("cuda"))
    for _ in range(3):
        run_image(name, tokens, config, newline)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        run_image(name, tokens, config, newline)
        torch.cuda.synchronize()
    kernels = sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)
    torch.cuda.set_sync_debug_mode("warn")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_image(name, tokens, config, newline)
    torch.cuda.set_sync_debug_mode(0)
    syncs = sum("synchroniz" in str(w.message) for w in caught)
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        run_image(name, tokens, config, newline)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return dict(kernels=kernels, syncs=syncs, ms=1e3 * statistics.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cuda", action="store_true", help="measure on the real GPU")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--ratio", type=float, default=0.25)
    args = parser.parse_args()
    torch.set_num_threads(1)
    methods = [m for m in args.methods.split(",") if m]
    print(
        f"one 672x672 image = 5 views x 576 tokens, D=4096 bf16, ratio {args.ratio}; torch {torch.__version__}"
    )
    with force_reference():
        if args.cuda:
            print(f"device: {torch.cuda.get_device_name()}")
            print("| method | CUDA kernels + memcpys | syncs | ms per image |")
            print("|---|---|---|---|")
            for name in methods:
                c = cuda_counts(name, args.ratio)
                print(f"| {name} | {c['kernels']} | {c['syncs']} | {c['ms']:.3f} |")
            return
        print("device: emulated accelerator on CPU (counts, not times)")
        print(
            "| method | device ops | syncs | h2d | host ops | profiler aten ops (all CPU) | top device ops |"
        )
        print("|---|---|---|---|---|---|---|")
        for name in methods:
            try:
                c = emulated_counts(name, args.ratio)
            except RuntimeError as err:  # e.g. torch.tensor(..., device=x.device) escapes the wrapper
                print(f"| {name} | n/a: the emulation cannot follow this method ({str(err)[:60]}) |")
                continue
            print(
                f"| {name} | {c['device_ops']} | {c['syncs']} | {c['h2d']} | {c['host_ops']} "
                f"| {c['profiler_ops']} | {c['top']} |"
            )


if __name__ == "__main__":
    main()
