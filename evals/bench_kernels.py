"""Time and peak memory of the similarity ops: Triton kernel vs naive torch vs chunked torch.

    python evals/bench_kernels.py --device cuda          # whole GPU grid, a few minutes on one GPU
    python evals/bench_kernels.py --device cpu           # naive vs chunked torch, reduced grid
    python evals/bench_kernels.py --device cpu --quick   # a smoke run

Implementations: ``naive`` (the whole [B, N, N] similarity matrix; ``reference.naive_*``),
``chunked`` (the torch reference path, ``reference.*``) and, on CUDA with triton installed,
``triton`` (``triton_ops.*``). Every op is run on the same random tokens x [B, N, D]
(top-k: x against itself, no masks). Each row of the table is one (op, B, N, D, dtype).

Time: the fastest of several rounds that call the implementations in turn, after one warm-up
call each (CUDA: synchronised). On a shared machine other processes only ever add time, so the
fastest round is the implementation's own cost; the median is kept in the --json output.

Peak memory: bytes allocated during one call on top of what was allocated before it (inputs,
outputs of earlier calls freed).
- CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, minus the
  allocation before the call.
- CPU (Linux): growth of the process's peak resident set (VmHWM) over its resident set (VmRSS)
  right before the call. To make that track tensors, glibc's mmap threshold is pinned to 64 KiB
  (every tensor above it gets its own mapping, returned to the OS when freed), ``malloc_trim``
  runs before each measurement and VmHWM is reset through ``/proc/self/clear_refs``. A calibration
  line (a 64 MiB tensor) is printed first. Elsewhere CPU memory is reported as n/a.

The summary prints the measured ratios and checks them against the targets: CPU chunked time
<= 1.5x naive at a fraction of its memory; CUDA triton >= 2x faster than naive with O(N) extra memory.
"""

from __future__ import annotations

import argparse
import ctypes
import itertools
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from vtcompress.hints import install_command
from vtcompress.kernels import reference

MiB = 2**20

# --------------------------------------------------------------------------------------------------
# Peak memory probes


class CpuPeak:
    """Peak resident-set growth of this process during a call (Linux + glibc; see module doc)."""

    def __init__(self) -> None:
        self.ok = False
        try:
            self.libc = ctypes.CDLL("libc.so.6")
            self.libc.mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD: large blocks never stay in the heap
            self._reset()
            self._status()
            self.ok = True
        except (OSError, AttributeError):
            pass

    def _reset(self) -> None:
        self.libc.malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current VmRSS

    @staticmethod
    def _status() -> dict[str, int]:
        out = {}
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key, value = line.split(":")
                    out[key] = int(value.split()[0]) * 1024
        return out

    def measure(self, fn: Callable[[], object]) -> float | None:
        if not self.ok:
            fn()
            return None
        self._reset()
        before = self._status()["VmRSS"]
        fn()
        return max(0, self._status()["VmHWM"] - before) / MiB


def cuda_peak(fn: Callable[[], object], device: torch.device) -> float:
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - base) / MiB


# --------------------------------------------------------------------------------------------------
# Ops and implementations


def make_ops(k_values: list[int]) -> dict[str, Callable[[dict, torch.Tensor], Callable[[], object]]]:
    """op name -> (implementation table, x) -> zero-argument call."""
    ops = {}
    for k in k_values:
        ops[f"cosine_topk k={k}"] = lambda impl, x, k=k: lambda: impl["cosine_topk"](x, x, k)
    ops["energy_score"] = lambda impl, x: lambda: impl["energy_score"](x, 0.5, 0.1)
    ops["redundancy_count"] = lambda impl, x: lambda: impl["redundancy_count"](x, 0.5)

    def cls(impl, x):
        # [CLS] logits of a layer with D = H x 64: q [B, H, 64] against keys [B, N, H, 64].
        bsz, n, d = x.shape
        h = max(1, d // 64)
        keys = x[..., : h * 64].reshape(bsz, n, h, 64)
        q = keys[:, 0]
        return lambda: impl["cls_attention_logits"](q, keys, 0.125)

    ops["cls_attention_logits"] = cls
    return ops


def implementations(device: torch.device, chunk_size: int | None) -> dict[str, dict[str, Callable]]:
    impls = {
        "naive": {
            "cosine_topk": reference.naive_cosine_topk,
            "energy_score": reference.naive_energy_score,
            "redundancy_count": reference.naive_redundancy_count,
            "cls_attention_logits": reference.naive_cls_attention_logits,
        },
        "chunked": {
            "cosine_topk": lambda *a: reference.cosine_topk(*a, chunk_size=chunk_size),
            "energy_score": lambda *a: reference.energy_score(*a, chunk_size=chunk_size),
            "redundancy_count": lambda *a: reference.redundancy_count(*a, chunk_size=chunk_size),
            "cls_attention_logits": lambda *a: reference.cls_attention_logits(*a, chunk_size=chunk_size),
        },
    }
    if device.type == "cuda":
        try:
            from vtcompress.kernels import triton_ops
        except ImportError:
            print(f"# triton not installed ({install_command('kernels')}): no triton column")
        else:
            impls["triton"] = {
                "cosine_topk": triton_ops.cosine_topk,
                "energy_score": triton_ops.energy_score,
                "redundancy_count": triton_ops.redundancy_count,
                "cls_attention_logits": triton_ops.cls_attention_logits,
            }
    return impls


def first_tensor(out: object) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out


def max_diff(out: object, ref: object) -> float:
    """Largest |difference| of the float result (scores, energy, logits) or of the counts."""
    a, b = first_tensor(out), first_tensor(ref)
    a, b = a.double(), b.double()
    both_inf = torch.isinf(a) & torch.isinf(b) & (a.sign() == b.sign())
    return float((a - b).abs().masked_fill(both_inf, 0).max()) if a.numel() else 0.0


# --------------------------------------------------------------------------------------------------
# Runner


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_once(fn: Callable[[], object], device: torch.device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def time_interleaved(
    calls: dict[str, Callable[[], object]], device: torch.device, repeat: int
) -> dict[str, tuple[float, float]]:
    """(fastest, median) ms per implementation over rounds that call them in turn, so that load
    from other processes hits every implementation alike. Short calls get more rounds (about 0.2 s
    per implementation, at most 25)."""
    first = {name: time_once(fn, device) for name, fn in calls.items()}
    rounds = min(25, max(repeat, int(0.2 / max(max(first.values()), 1e-6))))
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, fn in calls.items():
            times[name].append(time_once(fn, device))
    return {name: (min(v) * 1e3, statistics.median(v) * 1e3) for name, v in times.items()}


def grid(args: argparse.Namespace) -> list[tuple[int, int, int]]:
    if args.configs:
        return [tuple(int(v) for v in c.split("x")) for c in args.configs]
    if args.quick:
        return [(1, 576, 64), (2, 1024, 256)]
    if args.device == "cuda":
        return list(itertools.product([1, 4, 16], [576, 1152, 2304, 4096], [64, 256, 1024]))
    # CPU: naive needs B x N^2 floats several times over and one core of a shared machine;
    # every N and D of the GPU grid appears, batches at the small end.
    return [
        (1, 576, 64),
        (1, 576, 1024),
        (4, 576, 256),
        (16, 576, 64),
        (1, 1152, 256),
        (1, 2304, 64),
        (1, 2304, 1024),
        (4, 2304, 64),
        (1, 4096, 64),
        (1, 4096, 1024),
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"]
    )
    p.add_argument(
        "--dtypes", default=None, help="comma list; default bfloat16,float32 on cuda, float32 on cpu"
    )
    p.add_argument("--ops", default=None, help="comma list of op names (default: all)")
    p.add_argument("--k", default="1,8", help="top-k values to benchmark (default 1,8)")
    p.add_argument("--configs", nargs="*", help="BxNxD triples, e.g. 1x576x64 4x2304x1024 (default: grid)")
    p.add_argument("--quick", action="store_true", help="two small configurations")
    p.add_argument(
        "--repeat", type=int, default=None, help="timed calls per measurement (default 5 cuda, 3 cpu)"
    )
    p.add_argument("--chunk-size", type=int, default=None, help="chunked reference rows (default: the op's)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--json", type=Path, default=None, help="also write every measurement here")
    args = p.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda needs a CUDA device")
    torch.set_num_threads(args.threads)
    dtypes = [
        getattr(torch, d)
        for d in (args.dtypes or ("bfloat16,float32" if device.type == "cuda" else "float32")).split(",")
    ]
    repeat = args.repeat or 5
    ops = make_ops([int(k) for k in args.k.split(",")])
    if args.ops:
        wanted = args.ops.split(",")
        ops = {name: fn for name, fn in ops.items() if name.split()[0] in wanted}
    impls = implementations(device, args.chunk_size)

    if device.type == "cuda":
        machine = f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
        measure = lambda fn: cuda_peak(fn, device)  # noqa: E731
    else:
        machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {args.threads} torch thread(s), torch {torch.__version__}"
        probe = CpuPeak()
        measure = probe.measure
        if probe.ok:
            calib = probe.measure(lambda: torch.ones(64 * MiB // 4))
            print(f"# CPU memory probe calibration: a 64 MiB tensor measures {calib:.1f} MiB")
    try:
        import triton

        machine += f", triton {triton.__version__}"
    except ImportError:
        pass
    print(f"# machine: {machine}")
    print(
        f"# chunk rows: {args.chunk_size or reference.DEFAULT_CHUNK_ROWS} (cls keys: {args.chunk_size or reference.DEFAULT_CHUNK_KEYS}); repeat {repeat}"
    )

    names = list(impls)
    head = f"{'op':<22} {'B':>3} {'N':>5} {'D':>5} {'dtype':<9}"
    head += "".join(f" {n + ' ms':>12} {n + ' MiB':>13}" for n in names)
    head += "".join(f" {n + '/naive t':>16} {n + '/naive m':>16}" for n in names[1:]) + "  max|diff|"
    print(head)

    rows = []
    start = time.perf_counter()
    x_key, x = None, None
    for (bsz, n, d), dtype, (op_name, op) in itertools.product(grid(args), dtypes, ops.items()):
        if x_key != (bsz, n, d, dtype):  # one input per shape and dtype, shared by the ops
            x = None
            g = torch.Generator(device=device).manual_seed(0)
            x = torch.randn(bsz, n, d, generator=g, device=device).to(dtype)
            x_key = (bsz, n, d, dtype)
        row = {"op": op_name, "B": bsz, "N": n, "D": d, "dtype": str(dtype).removeprefix("torch.")}
        ref_out = None
        diffs = []
        calls = {name: op(impls[name], x) for name in names}
        for call in calls.values():
            out = call()  # warm-up (and Triton compilation)
            sync(device)
            if ref_out is None:
                ref_out = out
            else:
                diffs.append(max_diff(out, ref_out))
            del out
        for name, (fastest, median) in time_interleaved(calls, device, repeat).items():
            row[f"{name}_ms"] = fastest
            row[f"{name}_median_ms"] = median
        for name, call in calls.items():
            row[f"{name}_mib"] = measure(call)
        row["max_diff"] = max(diffs) if diffs else 0.0
        for name in names[1:]:
            row[f"{name}/naive_time"] = row[f"{name}_ms"] / row["naive_ms"]
            m_naive, m = row["naive_mib"], row[f"{name}_mib"]
            row[f"{name}/naive_mem"] = (m / m_naive) if (m is not None and m_naive) else None
        rows.append(row)
        line = f"{op_name:<22} {bsz:>3} {n:>5} {d:>5} {row['dtype']:<9}"
        for name in names:
            mib = row[f"{name}_mib"]
            line += f" {row[f'{name}_ms']:>12.2f} {('n/a' if mib is None else f'{mib:.1f}'):>13}"
        for name in names[1:]:
            mr = row[f"{name}/naive_mem"]
            line += f" {row[f'{name}/naive_time']:>16.2f} {('n/a' if mr is None else f'{mr:.3f}'):>16}"
        print(line + f"  {row['max_diff']:.2e}", flush=True)
        del ref_out, calls

    print(f"# {len(rows)} measurements in {time.perf_counter() - start:.0f} s on {machine}")
    summarize(rows, names, device)
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "rows": rows}, indent=1))
    return 0


def summarize(rows: list[dict], names: list[str], device: torch.device) -> None:
    def geomean(values: list[float]) -> float:
        return math.exp(sum(math.log(v) for v in values) / len(values))

    for name in names[1:]:
        t = [r[f"{name}/naive_time"] for r in rows]
        m = [r[f"{name}/naive_mem"] for r in rows if r[f"{name}/naive_mem"] is not None]
        print(
            f"# {name} vs naive: time ratio geomean {geomean(t):.2f}, worst {max(t):.2f}, best {min(t):.2f}"
            + (
                f"; memory ratio geomean {geomean([max(v, 1e-3) for v in m]):.3f}, worst {max(m):.3f}"
                if m
                else ""
            )
        )
    if device.type == "cpu" and "chunked" in names:
        t = [r["chunked/naive_time"] for r in rows]
        m = [r["chunked/naive_mem"] for r in rows if r["chunked/naive_mem"] is not None]
        print(f"# target CPU: chunked time <= 1.5x naive in {sum(v <= 1.5 for v in t)}/{len(t)} rows")
        if m:
            print(f"# target CPU: chunked peak memory below naive in {sum(v < 1 for v in m)}/{len(m)} rows")
        big = [r for r in rows if r["N"] >= 2048 and not r["op"].startswith("cls") and r["chunked/naive_mem"]]
        if big:
            worst = max(r["chunked/naive_mem"] for r in big)
            print(f"# target CPU: similarity ops at N >= 2048 use at most {worst:.3f}x the naive peak memory")
    if device.type == "cuda" and "triton" in names:
        sims = [r for r in rows if not r["op"].startswith("cls")]
        speed = [r["naive_ms"] / r["triton_ms"] for r in sims]
        print(
            f"# target CUDA: triton >= 2x faster than naive in {sum(s >= 2 for s in speed)}/{len(speed)} similarity rows"
        )
        for r in sims:
            # O(N) extra memory: the kernel allocates a few floats per token, never B x N x N.
            r["triton_extra_bytes_per_token"] = r["triton_mib"] * MiB / (r["B"] * r["N"])
        worst = max(r["triton_extra_bytes_per_token"] for r in sims)
        print(f"# target CUDA: triton extra memory at most {worst:.0f} bytes per token (B x N)")


if __name__ == "__main__":
    sys.exit(main())
