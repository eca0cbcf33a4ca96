"""Cost of every registered compression method vs ratio, batch size and resolution.

    python -m evals.bench --quick                 # a few minutes on a 2-core CPU
    python -m evals.bench                         # batch sweep + resolution sweep (docs/benchmarks.md)
    python -m evals.bench --full                  # every batch size x every grid
    python -m evals.bench --preset gpu            # prefill at LLaVA-NeXT-7B widths on a GPU (seconds)
    python -m evals.bench --device cuda --model llava-hf/llava-v1.6-vicuna-7b-hf   # real weights

Every case is one ``generate`` call (prefill + ``--decode-tokens`` new tokens) on a batch of
identical synthetic images whose size is exactly an anyres canvas (no letterbox), timed stage
by stage (see :mod:`evals.bench.measure`), with analytic FLOPs at the checkpoint's full depth
(see :mod:`evals.bench.cost`). Writes ``results.json``, ``results.md`` and plots to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

import vtcompress as vtc
from evals.bench import cost
from evals.bench.measure import PeakMemory, StageClock
from evals.bench.models import (
    LLAVA_V16_PINPOINTS,
    BenchModel,
    build_random_llava_next,
    cut_vision_tower,
    load_checkpoint,
)
from vtcompress.config import TOWER_MERGE
from vtcompress.integrations.llava_next.layout import AnyResLayout
from vtcompress.integrations.prompt import chat_prompt
from vtcompress.registry import get_method, make_config

PROMPT = "Describe this image in detail."
# Presets fill the options the command line leaves unset.
PRESETS: dict[str, dict[str, Any]] = {
    # Prefill on a GPU: a 672x672 image (2x2 grid, 2880 visual tokens) at batch 1 through the whole
    # CLIP ViT-L/14-336 tower and a Vicuna-7B-wide decoder cut to 4 layers, bfloat16, median of 5.
    # The FLOPs ratio of 4 layers is the full depth's (every layer costs the same).
    "gpu": dict(device="cuda", decoder_layers=4, batch_sizes="1", grids="2x2", repeats=5, decode_tokens=1),
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


# --- inputs ---------------------------------------------------------------------------------
def synthetic_image(height: int, width: int, seed: int = 0):
    """A deterministic RGB image with smooth regions and edges (content does not affect cost)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize(
        (width, height), Image.BILINEAR
    )
    pixels = np.asarray(coarse).astype(np.int16)
    for _ in range(12):  # a few flat rectangles: edges and uniform areas, as in real photos
        y0, x0 = rng.integers(0, height), rng.integers(0, width)
        pixels[y0 : y0 + height // 6, x0 : x0 + width // 6] = rng.integers(0, 256, 3)
    pixels += rng.integers(-8, 9, pixels.shape, dtype=np.int16)
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def prompt_text(processor: Any) -> str:
    return chat_prompt(processor, PROMPT)


def make_inputs(bench: BenchModel, grid: tuple[int, int], batch: int, device: torch.device) -> dict[str, Any]:
    view = bench.config.vision_config.image_size
    image = synthetic_image(grid[0] * view, grid[1] * view)
    text = prompt_text(bench.processor)
    inputs = bench.processor(images=[image] * batch, text=[text] * batch, return_tensors="pt", padding=True)
    dtype = next(bench.model.parameters()).dtype
    return {k: (v.to(device, dtype) if k == "pixel_values" else v.to(device)) for k, v in inputs.items()} | {
        "_image_size": (image.height, image.width)
    }


def grids_of(pinpoints: list[list[int]], view: int) -> list[tuple[int, int]]:
    """Distinct crop grids of the pinpoints, by number of crops, then rows."""
    grids = {(h // view, w // view) for h, w in pinpoints}
    return sorted(grids, key=lambda g: (g[0] * g[1], g[0]))


# --- one case ---------------------------------------------------------------------------------
def reuse_depth(bench: BenchModel, method: str, ratio: float) -> int:
    """Fewest vision layers whose capture the method's config accepts (>= 1)."""
    config = make_config(method, ratio=ratio)
    feature_layer = bench.config.vision_feature_layer
    for k in range(1, bench.vision_layers + 1):
        score_layer = min(feature_layer % (k + 1), k - 1)
        try:
            config.capture_layers(score_layer, k)
        except ValueError:
            continue
        return k
    return bench.vision_layers


def run_case(
    bench: BenchModel,
    inputs: dict[str, Any],
    method: str | None,
    ratio: float,
    decode_tokens: int,
    cut_layers: int | None,
    memory: PeakMemory,
) -> dict[str, Any]:
    """One generate call; ``method=None`` is the stock, uncompressed model."""
    model = bench.model
    call = {k: v for k, v in inputs.items() if not k.startswith("_")}
    new_tokens = 1 + decode_tokens
    stats, merged = None, False
    with cut_vision_tower(model, cut_layers):
        handle = vtc.compress(model, method, ratio=ratio) if method else None
        try:
            with torch.inference_mode(), StageClock(model, memory) as clock:
                memory.begin_run()
                start, start_cpu = time.perf_counter(), time.process_time()
                model.generate(**call, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
                total, total_cpu = time.perf_counter() - start, time.process_time() - start_cpu
                peak = memory.end_run()
            vision_layers_run = bench.vision_layers  # inside the cut: the layers that ran
        finally:
            if handle is not None:
                stats = handle.last_stats
                handle.remove()
    vision, decoder = clock.stages["vision"], clock.stages["decoder"]
    seq_before = [int(n) for n in call["attention_mask"].sum(1).tolist()]
    if stats is not None:
        images = [
            {
                "before": im.tokens_before,
                "after": im.tokens_after,
                "newlines_before": im.newlines_before,
                "newlines_after": im.newlines_after,
                "views_after": [v.kept for v in im.views],
            }
            for im in stats.images
        ]
        merged = any(v.sizes is not None for im in stats.images for v in im.views)
        seq_after = [s.length_after for s in stats.samples]
        compress_seconds = stats.compress_seconds
    else:
        layout = AnyResLayout.for_image(
            inputs["_image_size"],
            bench.pinpoints,
            bench.config.vision_config.image_size,
            bench.config.vision_config.patch_size,
        )
        n, nl = layout.num_tokens(), layout.num_newlines("unpadded")
        views = layout.view_counts()
        images = [
            {"before": n, "after": n, "newlines_before": nl, "newlines_after": nl, "views_after": views}
        ] * len(seq_before)
        seq_after, compress_seconds = seq_before, 0.0
    return {
        "method": method or "none",
        "ratio": ratio,
        "merging": merged,
        "vision_layers_run": vision_layers_run,
        "seconds": {
            "vision": clock.vision_seconds(),
            "pack": clock.total("pack"),
            "compress": compress_seconds,
            "prefill": clock.prefill_seconds(),
            "decode_per_token": clock.decode_seconds_per_token(),
            "generate": total,
        },
        "cpu_seconds": {
            "vision": clock.vision_seconds(cpu=True),
            "pack": clock.total("pack", cpu=True),
            "prefill": clock.prefill_seconds(cpu=True),
            "decode_per_token": clock.decode_seconds_per_token(cpu=True),
            "generate": total_cpu,
        },
        "memory_bytes": {
            "peak": peak,
            "vision_extra": vision.extra,
            "prefill_extra": decoder.extra,
        },
        "tokens": {
            "images": images,
            "sequence_before": seq_before,
            "sequence_after": seq_after,
            "prefill_lengths": [n for n in decoder.lengths if n > 1],
        },
    }


def median_case(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The first run with every timing replaced by the median over runs."""
    out = dict(runs[0])
    for clock in ("seconds", "cpu_seconds"):
        out[clock] = {k: statistics.median(r[clock][k] for r in runs) for k in runs[0][clock]}
    out["repeats"] = len(runs)
    return out


def add_analytics(bench: BenchModel, case: dict[str, Any], views: int, dtype_bytes: int) -> None:
    """Full-depth analytic FLOPs and KV cache of a case (in place)."""
    vcfg, tcfg = bench.config.vision_config, bench.config.text_config
    batch = len(case["tokens"]["sequence_after"])
    vision = cost.vision_tower_flops(vcfg, views * batch, bench.full_vision_layers)
    projector = cost.projector_flops(vcfg, tcfg, views * batch)
    after = case["tokens"]["sequence_after"]
    before = case["tokens"]["sequence_before"]
    decoder = cost.decoder_flops(tcfg, bench.full_decoder_layers, after)
    case["flops"] = {
        "vision_tower": vision,
        "projector": projector,
        "decoder_prefill": decoder,
        "decoder_prefill_uncompressed": cost.decoder_flops(tcfg, bench.full_decoder_layers, before),
        "total": vision + projector + decoder,
    }
    case["kv_cache_bytes"] = cost.kv_cache_bytes(tcfg, bench.full_decoder_layers, after, dtype_bytes)


def measure_setting(
    bench: BenchModel,
    grid: tuple[int, int],
    batch: int,
    methods: list[str],
    ratios: list[float],
    args: argparse.Namespace,
    memory: PeakMemory,
    device: torch.device,
    log,
) -> list[dict[str, Any]]:
    """The uncompressed case, then every method x ratio, for one grid and batch size."""
    inputs = make_inputs(bench, grid, batch, device)
    views = 1 + grid[0] * grid[1]
    dtype_bytes = next(bench.model.parameters()).element_size()
    setting = {"grid": list(grid), "batch": batch, "image_size": list(inputs["_image_size"]), "views": views}

    def measured(method, ratio, cut):
        runs = [
            run_case(bench, inputs, method, ratio, args.decode_tokens, cut, memory)
            for _ in range(args.repeats)
        ]
        case = {**setting, **median_case(runs)}
        add_analytics(bench, case, views, dtype_bytes)
        return case

    base = measured(None, 1.0, None)
    log(_line(base))
    cases = [base]
    for method in methods:
        for ratio in ratios:
            cut = None
            in_tower = TOWER_MERGE in make_config(method, ratio=ratio).requirements(1, 2)
            if args.reuse_vision and not in_tower:
                cut = reuse_depth(bench, method, ratio)
            case = measured(method, ratio, cut)
            if cut is not None and cut < bench.vision_layers:
                # The tower is the stock one for this method: its time is the uncompressed run's.
                for clock in ("seconds", "cpu_seconds"):
                    case[clock]["vision_cut_tower"] = case[clock]["vision"]
                    case[clock]["vision"] = base[clock]["vision"]
                case["memory_bytes"]["vision_extra"] = base["memory_bytes"]["vision_extra"]
                case["vision_source"] = f"uncompressed run (this run cut the tower to {cut} layer(s))"
            else:
                case["vision_source"] = "this run"
            log(_line(case))
            cases.append(case)
    return cases


def _line(case: dict[str, Any]) -> str:
    s, c, t = case["seconds"], case["cpu_seconds"], case["tokens"]
    return (
        f"  grid {case['grid'][0]}x{case['grid'][1]} batch {case['batch']} {case['method']:>10} "
        f"r={case['ratio']:<5g} tokens {t['images'][0]['before']}->{t['images'][0]['after']} | wall/cpu: "
        f"vision {s['vision']:.2f}/{c['vision']:.2f}s pack {s['pack'] * 1e3:.1f}/{c['pack'] * 1e3:.1f}ms "
        f"prefill {s['prefill']:.2f}/{c['prefill']:.2f}s decode {s['decode_per_token'] * 1e3:.0f}/"
        f"{c['decode_per_token'] * 1e3:.0f}ms/tok"
    )


# --- machine / CLI ----------------------------------------------------------------------------
def machine_info(device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    import transformers

    cpu = platform.processor()
    with open("/proc/cpuinfo") if os.path.exists("/proc/cpuinfo") else open(os.devnull) as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info = {
        "device": device.type,
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "vtcompress": vtc.__version__,
        "python": platform.python_version(),
        "dtype": str(dtype).replace("torch.", ""),
        "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    info["code"] = _git_version()
    return info


def _git_version() -> str | None:
    """Commit of the measured code (``+dirty`` with uncommitted changes), if run from a git checkout."""
    import subprocess

    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            [
                "git",
                "status",
                "--porcelain",
                "--",
                "vtcompress",
                "integrations",
                "kernels",
                "evals/bench/*.py",
            ],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("+dirty" if dirty else "")


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x]


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def _pairs(text: str) -> list[list[int]]:
    return [[int(a) for a in p.lower().split("x")] for p in text.split(",") if p]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m evals.bench", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--quick",
        action="store_true",
        help="batch 1, smallest and largest grid, 2 CLIP layers, 1 decoder layer",
    )
    p.add_argument(
        "--full",
        action="store_true",
        help="every batch size x every grid (default: batch sweep on the largest grid + grid sweep at the smallest batch)",
    )
    p.add_argument(
        "--preset",
        choices=list(PRESETS),
        default=None,
        help="gpu: prefill at LLaVA-NeXT-7B widths on CUDA, 2x2 grid, batch 1, decoder cut to 4 layers "
        "(options given on the command line win)",
    )
    p.add_argument("--device", default=None, choices=["cpu", "cuda"], help="default cpu (--preset gpu: cuda)")
    p.add_argument(
        "--model",
        default=None,
        help="real LLaVA-NeXT checkpoint (hub id or path; 'tiny' = offline tiny model); default: random weights at --decoder widths",
    )
    p.add_argument(
        "--decoder",
        default="vicuna-7b",
        help="random-weight decoder widths: vicuna-7b, mistral-7b, vicuna-13b, tiny",
    )
    p.add_argument(
        "--decoder-layers",
        type=int,
        default=None,
        help="decoder layers run (random model; default 2, --quick 1)",
    )
    p.add_argument(
        "--vision-layers",
        type=int,
        default=None,
        help="CLIP layers run (random model; default all 24, --quick 2)",
    )
    p.add_argument(
        "--pinpoints",
        default=None,
        help="anyres canvases HxW,... (random model; default llava-v1.6's; add 336x336 for a 1x1 grid)",
    )
    p.add_argument(
        "--methods",
        default=None,
        help="comma-separated (default: every registered image method; videos: evals/bench_video.py)",
    )
    p.add_argument("--ratios", default="0.5,0.25,0.1")
    p.add_argument("--batch-sizes", default=None, help="default 1,4,8 (--quick: 1)")
    p.add_argument(
        "--grids",
        default=None,
        help="e.g. 1x2,2x2 (default: every grid of the pinpoints; --quick: smallest and largest)",
    )
    p.add_argument(
        "--decode-tokens",
        type=int,
        default=None,
        help="tokens decoded after the prefill (default 4, --quick 2)",
    )
    p.add_argument(
        "--repeats", type=int, default=None, help="runs per case, median kept (default 1 on CPU, 3 on CUDA)"
    )
    p.add_argument(
        "--dtype", default=None, choices=list(DTYPES), help="default float32 on CPU, bfloat16 on CUDA"
    )
    p.add_argument("--attn", default="sdpa", help="attention implementation")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--reuse-vision", action=argparse.BooleanOptionalAction, default=None,
                   help="compressed runs of methods that leave the tower alone cut it to the layers they need and report the uncompressed run's vision time (default on for CPU, off for CUDA)")  # fmt: skip
    p.add_argument("--out", default="evals/results/latest/bench")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument(
        "--report-only", metavar="JSON", help="rebuild results.md and plots from a saved results.json"
    )
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.quick and args.preset:
        p.error(f"--quick and --preset {args.preset}: choose one")
    for key, value in PRESETS.get(args.preset, {}).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.device = args.device or "cpu"
    if args.quick:
        args.decoder_layers = args.decoder_layers or 1
        args.vision_layers = args.vision_layers or 2
        args.batch_sizes = args.batch_sizes or "1"
        args.decode_tokens = args.decode_tokens if args.decode_tokens is not None else 2
    args.decoder_layers = args.decoder_layers or 2
    args.batch_sizes = _ints(args.batch_sizes or "1,4,8")
    args.decode_tokens = 4 if args.decode_tokens is None else args.decode_tokens
    args.ratios = _floats(args.ratios)
    args.repeats = args.repeats or (3 if args.device == "cuda" else 1)
    args.dtype = args.dtype or ("bfloat16" if args.device == "cuda" else "float32")
    if args.reuse_vision is None:
        args.reuse_vision = args.device == "cpu"
    return args


def plan(grids: list[tuple[int, int]], batches: list[int], full: bool) -> list[tuple[tuple[int, int], int]]:
    """(grid, batch) settings: every pair, or the batch sweep on the largest grid + the grid sweep."""
    if full:
        return [(g, b) for g in grids for b in batches]
    settings = [(grids[-1], b) for b in batches]
    settings += [(g, min(batches)) for g in grids[:-1]]
    return settings


def plan_settings(
    args: argparse.Namespace, pinpoints: list[list[int]], view: int
) -> tuple[list[tuple[int, int]], list[tuple[tuple[int, int], int]]]:
    """The grids to measure (``--grids``, or the pinpoints' grids) and the (grid, batch) settings."""
    grids = grids_of(pinpoints, view)
    if args.grids:
        wanted = [tuple(g) for g in _pairs(args.grids)]
        missing = [g for g in wanted if g not in grids]
        if missing:
            raise SystemExit(f"grids {missing} are not in the pinpoints' grids {grids}")
        grids = sorted(wanted, key=lambda g: (g[0] * g[1], g[0]))
    elif args.quick:
        grids = sorted({grids[0], grids[-1]}, key=lambda g: (g[0] * g[1], g[0]))
    return grids, plan(grids, args.batch_sizes, args.full)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.report_only:
        return report_only(Path(args.report_only), Path(args.out), not args.no_plots)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible to torch")
    dtype = DTYPES[args.dtype]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        print(msg, flush=True)

    started = time.perf_counter()
    if args.model:
        bench = load_checkpoint(args.model, dtype, args.device, args.attn)
    else:
        bench = build_random_llava_next(
            args.decoder,
            args.decoder_layers,
            args.vision_layers,
            _pairs(args.pinpoints) if args.pinpoints else LLAVA_V16_PINPOINTS,
            dtype,
            args.seed,
            args.attn,
            device=device,
        )
    grids, settings = plan_settings(args, bench.pinpoints, bench.config.vision_config.image_size)
    methods = args.methods.split(",") if args.methods else vtc.available_methods("image")
    for m in methods:
        get_method(m)  # unknown names fail now, listing the known ones
    memory = PeakMemory(device)
    log(
        f"vtcompress bench: {bench.name} ({'random weights' if bench.random_weights else 'checkpoint'}), "
        f"vision {bench.vision_layers}/{bench.full_vision_layers} layers, decoder "
        f"{bench.decoder_layers}/{bench.full_decoder_layers} layers, {args.dtype}, {device.type}, "
        f"{torch.get_num_threads()} threads; methods {', '.join(methods)}; ratios {args.ratios}; "
        f"settings {[(f'{g[0]}x{g[1]}', b) for g, b in settings]}"
    )

    # Warm-up (not recorded): kernels and allocator on the smallest case.
    warm = make_inputs(bench, grids[0], 1, device)
    run_case(bench, warm, None, 1.0, 1, 1, memory)
    run_case(
        bench, warm, methods[0], min(args.ratios), 1, reuse_depth(bench, methods[0], min(args.ratios)), memory
    )

    from evals.bench.report import summarize, write_outputs

    result = {
        "machine": machine_info(device, dtype),
        "model": {
            "name": bench.name,
            "random_weights": bench.random_weights,
            "vision_layers_run": bench.vision_layers,
            "vision_layers_full": bench.full_vision_layers,
            "decoder_layers_run": bench.decoder_layers,
            "decoder_layers_full": bench.full_decoder_layers,
            "vision": _config_summary(bench.config.vision_config),
            "decoder": _config_summary(bench.config.text_config),
            "pinpoints": bench.pinpoints,
            **bench.describe,
        },
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "report_only")},
        "cases": [],
        "wall_seconds": None,
    }
    for grid, batch in settings:
        result["cases"] += measure_setting(
            bench, grid, batch, methods, args.ratios, args, memory, device, log
        )
        # Kept as it grows: a long run that stops still leaves its measurements.
        (out / "partial.json").write_text(json.dumps(result, indent=1))
    result["wall_seconds"] = time.perf_counter() - started
    (out / "results.json").write_text(json.dumps(result, indent=1))
    (out / "partial.json").unlink()
    result["summary"] = summarize(result)
    write_outputs(result, out, plots_on=not args.no_plots, log=log)
    log(f"done in {result['wall_seconds'] / 60:.1f} min; results in {out}/")
    return result


def report_only(path: Path, out: Path, plots_on: bool) -> dict[str, Any]:
    """Tables and plots again from a saved ``results.json`` (or ``partial.json``), no measurement."""
    from evals.bench.report import summarize, write_outputs

    result = json.loads(path.read_text())
    result["summary"] = summarize(result)
    write_outputs(result, out, plots_on=plots_on)
    return result


def _config_summary(config: Any) -> dict[str, Any]:
    keys = (
        "hidden_size",
        "intermediate_size",
        "num_attention_heads",
        "num_key_value_heads",
        "image_size",
        "patch_size",
    )
    return {k: getattr(config, k) for k in keys if getattr(config, k, None) is not None}
