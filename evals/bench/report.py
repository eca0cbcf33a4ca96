"""Tables, target checks and plots of a benchmark run (``results.json`` -> markdown, PNG)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vtcompress.hints import install_command

# Targets of the performance issue: compressor time as a fraction of the vision tower at the
# largest batch (selection methods / merging methods); |measured prefill ratio / analytic FLOPs
# ratio - 1|; proportional growth of kept tokens with resolution (largest relative residual).
OVERHEAD_TARGET = {"selection": 0.02, "merging": 0.05}
PREFILL_RATIO_TOLERANCE = 0.15
LINEARITY_TOLERANCE = 0.02
ISSUE_RATIOS = (0.5, 0.25, 0.1)

# GlobalCom² paper, LLaVA-NeXT-7B on an A100 (decoder TFLOPs, prefill ms), for the CUDA table.
PAPER_GLOBALCOM2 = {1.0: (41.7, 170.7), 0.5: (19.7, 74.5), 0.25: (9.6, 34.6), 0.1: (3.8, 13.3)}

GB = 1024**3
MB = 1024**2


def _setting(case: dict[str, Any]) -> tuple[tuple[int, int], int]:
    return tuple(case["grid"]), case["batch"]


def _baseline(cases: list[dict[str, Any]], setting) -> dict[str, Any]:
    return next(c for c in cases if c["method"] == "none" and _setting(c) == setting)


def headline_setting(cases: list[dict[str, Any]]) -> tuple[tuple[int, int], int]:
    """The largest batch on the grid with the most views (the issue's "5 views, batch 8")."""
    return max({_setting(c) for c in cases}, key=lambda s: (s[0][0] * s[0][1], s[1]))


def _vision_scale(result: dict[str, Any]) -> float:
    m = result["model"]
    return m["vision_layers_full"] / m["vision_layers_run"]


def primary_clock(result: dict[str, Any]) -> str:
    """Process CPU time on a CPU (robust on a shared machine), wall time on CUDA."""
    return "seconds" if result["machine"]["device"] == "cuda" else "cpu_seconds"


def generate_seconds(case: dict[str, Any], clock: str) -> float:
    """The whole generate call, with the full tower's time where the run cut the tower."""
    times = case[clock]
    if "vision_cut_tower" in times:
        return times["generate"] - times["vision_cut_tower"] + times["vision"]
    return times["generate"]


def issue_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Prefill ratio vs analytic FLOPs ratio, compressor overhead, at the headline setting.

    Overhead is the pack stage (method + packing + the adapter's bookkeeping) over the vision
    stage (tower + projector), on the primary clock; ``compress_seconds`` is the adapter's own
    figure (method + packing, wall).
    """
    cases = result["cases"]
    setting = headline_setting(cases)
    base = _baseline(cases, setting)
    scale = _vision_scale(result)
    clock = primary_clock(result)
    rows = []
    for c in cases:
        if _setting(c) != setting or c["method"] == "none":
            continue
        ratios = {k: c[k]["prefill"] / base[k]["prefill"] for k in ("seconds", "cpu_seconds")}
        flops_ratio = c["flops"]["decoder_prefill"] / base["flops"]["decoder_prefill"]
        vision = base[clock]["vision"]
        overhead = c[clock]["pack"] / vision if vision > 0 else math.nan
        kind = "merging" if c["merging"] else "selection"
        deviation = ratios[clock] / flops_ratio - 1
        rows.append(
            {
                "method": c["method"],
                "ratio": c["ratio"],
                "grid": list(setting[0]),
                "batch": setting[1],
                "clock": clock,
                "tokens_before": sum(i["before"] for i in c["tokens"]["images"]),
                "tokens_after": sum(i["after"] for i in c["tokens"]["images"]),
                "prefill_seconds": c[clock]["prefill"],
                "prefill_seconds_uncompressed": base[clock]["prefill"],
                "prefill_ratio_wall": ratios["seconds"],
                "prefill_ratio_cpu": ratios["cpu_seconds"],
                "flops_ratio": flops_ratio,
                "deviation": deviation,
                "prefill_ratio_met": abs(deviation) <= PREFILL_RATIO_TOLERANCE,
                "compress_seconds": c["seconds"]["compress"],
                "pack_seconds": c[clock]["pack"],
                "vision_seconds": vision,
                "overhead": overhead,
                # With a truncated tower the overhead is also given against the full-depth tower,
                # its time scaled by depth (an estimate; the exact figure needs the full tower).
                "overhead_full_depth_estimate": overhead / scale if scale != 1 else None,
                "overhead_kind": kind,
                "overhead_target": OVERHEAD_TARGET[kind],
                "overhead_met": (overhead / scale) <= OVERHEAD_TARGET[kind],
                "overhead_from_estimate": scale != 1,
            }
        )
    return rows


def linearity_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Kept tokens per image vs tokens before, across grids, at the smallest batch."""
    cases = result["cases"]
    batch = min(c["batch"] for c in cases)
    groups: dict[tuple[str, float], list[tuple[int, int, str]]] = {}
    for c in cases:
        if c["batch"] != batch or c["method"] == "none":
            continue
        im = c["tokens"]["images"][0]
        grid = f"{c['grid'][0]}x{c['grid'][1]}"
        groups.setdefault((c["method"], c["ratio"]), []).append((im["before"], im["after"], grid))
    rows = []
    for (method, ratio), points in sorted(groups.items()):
        points.sort()
        befores = sorted({b for b, _, _ in points})
        if len(befores) < 2:
            continue
        xs = [float(b) for b, _, _ in points]
        ys = [float(a) for _, a, _ in points]
        n = len(xs)
        mx, my = sum(xs) / n, sum(ys) / n
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
        intercept = my - slope * mx
        residual = max(abs(y - (slope * x + intercept)) / y for x, y in zip(xs, ys))
        fractions = [y / x for x, y in zip(xs, ys)]
        rows.append(
            {
                "method": method,
                "ratio": ratio,
                "batch": batch,
                "points": [{"grid": g, "before": b, "after": a} for b, a, g in points],
                "slope": slope,
                "intercept": intercept,
                "max_relative_residual": residual,
                "kept_fraction_min": min(fractions),
                "kept_fraction_max": max(fractions),
                "linear": residual <= LINEARITY_TOLERANCE,
            }
        )
    return rows


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    issue = issue_rows(result)
    linear = linearity_rows(result)
    return {
        "headline": {
            "grid": list(headline_setting(result["cases"])[0]),
            "batch": headline_setting(result["cases"])[1],
        },
        "issue_table": issue,
        "linearity": linear,
        "targets": {
            "overhead_met": sum(r["overhead_met"] for r in issue),
            "prefill_ratio_met": sum(r["prefill_ratio_met"] for r in issue),
            "linear_met": sum(r["linear"] for r in linear),
            "rows": len(issue),
            "linearity_rows": len(linear),
        },
    }


# --- markdown -------------------------------------------------------------------------------
def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)


def machine_line(result: dict[str, Any]) -> str:
    m, mod = result["machine"], result["model"]
    where = m.get("gpu") or f"{m['cpu']}, {m['cpu_count']} cores, no GPU"
    load = m.get("load_average_at_start")
    load_text = f"; load average at start {load[0]:.1f}" if load else ""
    return (
        f"Machine: {where}; torch {m['torch']}, transformers {m['transformers']}, {m['dtype']}, "
        f"{m['torch_threads']} torch thread(s){load_text}; code {m.get('code') or 'unknown'}. Model: {mod['name']} "
        f"({'random weights' if mod['random_weights'] else 'checkpoint weights'}), vision tower run "
        f"{mod['vision_layers_run']}/{mod['vision_layers_full']} layers, decoder run "
        f"{mod['decoder_layers_run']}/{mod['decoder_layers_full']} layers; FLOPs and KV cache at full depth."
    )


def cases_table(result: dict[str, Any]) -> str:
    rows = []
    for c in result["cases"]:
        s, cpu, t, f, mem = c["seconds"], c["cpu_seconds"], c["tokens"], c["flops"], c["memory_bytes"]
        im = t["images"][0]
        rows.append(
            [
                f"{c['grid'][0]}x{c['grid'][1]}",
                c["batch"],
                c["method"],
                f"{c['ratio']:g}",
                f"{im['before']}->{im['after']}",
                t["sequence_after"][0],
                f"{s['vision']:.2f} / {cpu['vision']:.2f}",
                f"{s['pack'] * 1e3:.1f} / {cpu['pack'] * 1e3:.1f}",
                f"{s['prefill']:.2f} / {cpu['prefill']:.2f}",
                f"{s['decode_per_token'] * 1e3:.0f} / {cpu['decode_per_token'] * 1e3:.0f}",
                f"{mem['peak'] / GB:.2f}",
                f"{mem['prefill_extra'] / GB:.2f}",
                f"{(f['vision_tower'] + f['projector']) / 1e12:.2f}",
                f"{f['decoder_prefill'] / 1e12:.2f}",
                f"{c['kv_cache_bytes'] / MB:.0f}",
            ]
        )
    header = [
        "grid", "batch", "method", "r", "visual tokens/img", "prompt len", "vision s", "pack ms",
        "prefill s", "decode ms/tok", "peak GB", "prefill +GB", "vision TFLOPs", "decoder TFLOPs", "KV MB",
    ]  # fmt: skip
    return _table(header, rows)


def issue_table(result: dict[str, Any]) -> str:
    rows = []
    for r in result["summary"]["issue_table"]:
        if not any(math.isclose(r["ratio"], x) for x in ISSUE_RATIOS):
            continue
        overhead = f"{r['overhead'] * 100:.3f}%"
        if r["overhead_full_depth_estimate"] is not None:
            overhead += f" ({r['overhead_full_depth_estimate'] * 100:.3f}% est. full tower)"
        rows.append(
            [
                r["method"],
                f"{r['ratio']:g}",
                f"{r['tokens_before']}->{r['tokens_after']}",
                f"{r['prefill_seconds_uncompressed']:.2f} -> {r['prefill_seconds']:.2f}",
                f"{r['prefill_ratio_cpu']:.3f} / {r['prefill_ratio_wall']:.3f}",
                f"{r['flops_ratio']:.3f}",
                f"{r['deviation'] * 100:+.1f}%",
                "yes" if r["prefill_ratio_met"] else "NO",
                f"{r['compress_seconds'] * 1e3:.1f}",
                f"{r['pack_seconds'] * 1e3:.1f}",
                f"{r['vision_seconds']:.2f}",
                overhead,
                f"<{r['overhead_target'] * 100:g}%: " + ("yes" if r["overhead_met"] else "NO"),
            ]
        )
    clock = "CPU" if primary_clock(result) == "cpu_seconds" else "wall"
    header = [
        "method", "r", "visual tokens (batch)", f"prefill s ({clock})", "prefill ratio CPU / wall",
        "FLOPs ratio", f"deviation ({clock})", "within 15%", "compress ms (adapter, wall)",
        f"pack ms ({clock})", f"vision s ({clock})", "pack / vision", "overhead target",
    ]  # fmt: skip
    return _table(header, rows)


def linearity_table(result: dict[str, Any]) -> str:
    rows = []
    for r in result["summary"]["linearity"]:
        pts = ", ".join(f"{p['grid']}: {p['before']}->{p['after']}" for p in r["points"])
        rows.append(
            [
                r["method"],
                f"{r['ratio']:g}",
                pts,
                f"{r['slope']:.4f}",
                f"{r['intercept']:.1f}",
                f"{r['max_relative_residual'] * 100:.2f}%",
                "yes" if r["linear"] else "NO",
            ]
        )
    header = [
        "method",
        "r",
        "tokens per image (grid: before->after)",
        "slope",
        "intercept",
        "max residual",
        "linear",
    ]
    return _table(header, rows)


def paper_table(result: dict[str, Any]) -> str:
    """GlobalCom²'s efficiency table layout, at the smallest batch on the headline grid."""
    cases = result["cases"]
    grid = headline_setting(cases)[0]
    batch = min(c["batch"] for c in cases if tuple(c["grid"]) == grid)
    rows = []
    for c in cases:
        if tuple(c["grid"]) != grid or c["batch"] != batch:
            continue
        paper = PAPER_GLOBALCOM2.get(c["ratio"]) if c["method"] in ("none", "globalcom2") else None
        rows.append(
            [
                c["method"],
                f"{c['ratio'] * 100:g}%",
                c["tokens"]["images"][0]["after"],
                f"{c['flops']['decoder_prefill'] / 1e12 / batch:.1f}",
                f"{c['memory_bytes']['peak'] / GB:.1f}",
                f"{c['kv_cache_bytes'] / MB / batch:.1f}",
                f"{c['seconds']['prefill'] * 1e3:.1f}",
                f"{batch / generate_seconds(c, 'seconds'):.2f}",
                f"{paper[0]} / {paper[1]}" if paper else "",
            ]
        )
    header = [
        "method", "retention", "visual tokens", "TFLOPs", "peak memory GB", "KV cache MB", "prefill ms",
        "throughput samples/s", "paper A100 TFLOPs / prefill ms",
    ]  # fmt: skip
    note = (
        f"Grid {grid[0]}x{grid[1]}, batch {batch}. TFLOPs: analytic decoder prefill per sample at full "
        "depth (as the paper counts); peak memory: max allocated over the whole generate call; KV cache: "
        "per sample after prefill; prefill: decoder time for the batch; throughput: samples per second of the whole "
        f"generate call (vision + compression + prefill + {result['settings']['decode_tokens']} decoded tokens)."
    )
    return _table(header, rows) + "\n\n" + note


def markdown(result: dict[str, Any]) -> str:
    s = result["summary"]
    t = s["targets"]
    h = s["headline"]
    parts = [
        "# vtcompress cost benchmark",
        "",
        machine_line(result),
        "",
        f"## Prefill and compressor overhead (grid {h['grid'][0]}x{h['grid'][1]}, batch {h['batch']})",
        "",
        issue_table(result),
        "",
        f"Targets met: prefill ratio within 15% of the FLOPs ratio in {t['prefill_ratio_met']}/{t['rows']} rows; "
        f"compressor overhead under target in {t['overhead_met']}/{t['rows']} rows; kept tokens linear in "
        f"resolution in {t['linear_met']}/{t['linearity_rows']} (method, ratio) pairs.",
        "",
        "## Kept tokens vs resolution",
        "",
        linearity_table(result) if s["linearity"] else "(one grid only)",
        "",
        "## Every case",
        "",
        "Times are wall / process-CPU seconds. vision: CLIP tower + projector; pack: "
        "`pack_image_features` (uncompressed: stock packing; compressed: the method, its packing and "
        "the adapter's bookkeeping; all images of the batch); prefill: the decoder layers run, LM head "
        "excluded; decode: one generate step for the batch; peak GB: process peak (CPU: resident set "
        "incl. weights); prefill +GB: what the prefill adds to the memory in use when it starts. "
        "TFLOPs and KV cache: whole batch, full depth.",
        "",
        cases_table(result),
    ]
    if result["machine"]["device"] == "cuda":
        parts += ["", "## GlobalCom² paper layout", "", paper_table(result)]
    return "\n".join(parts) + "\n"


# --- plots ----------------------------------------------------------------------------------
def plots(result: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = result["cases"]
    clock = primary_clock(result)
    unit = "CPU s" if clock == "cpu_seconds" else "s"
    methods = sorted({c["method"] for c in cases} - {"none"})
    setting = headline_setting(cases)
    base = _baseline(cases, setting)
    here = [c for c in cases if _setting(c) == setting]
    files = []
    title = f"grid {setting[0][0]}x{setting[0][1]}, batch {setting[1]}"

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for m in methods:
        mine = sorted((c for c in here if c["method"] == m), key=lambda c: c["ratio"])
        with_base = [*mine, base]  # r = 1: the uncompressed run
        ax1.plot([c["ratio"] for c in with_base], [c[clock]["prefill"] for c in with_base], "o-", label=m)
        ax2.plot([c["ratio"] for c in mine], [c[clock]["pack"] * 1e3 for c in mine], "o-", label=m)
    ratios = sorted({c["ratio"] for c in here})
    ideal = [base[clock]["prefill"] * _flops_ratio(here, base, r) for r in ratios]
    ax1.plot(ratios, ideal, "k:", label="FLOPs-proportional")
    ax1.set(xlabel="kept ratio r", ylabel=f"decoder prefill ({unit})", title=f"prefill vs ratio ({title})")
    if base[clock]["vision"] * 0.02 < 10 * max(c[clock]["pack"] for c in here):
        ax2.axhline(base[clock]["vision"] * 1e3 * 0.02, color="gray", ls="--", label="2% of vision stage")
    ax2.set(
        xlabel="kept ratio r", ylabel=f"compression ({unit[:-1]}ms)", title="compressor (pack stage) vs ratio"
    )
    ax1.legend(fontsize=8)
    ax2.legend(fontsize=8)
    files.append(_save(fig, out / "time_vs_ratio.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    vision = (base["flops"]["vision_tower"] + base["flops"]["projector"]) / 1e12
    for m in methods:
        mine = sorted((c for c in here if c["method"] == m), key=lambda c: c["ratio"]) + [base]
        ax.plot([c["ratio"] for c in mine], [c["flops"]["total"] / 1e12 for c in mine], "o-", label=m)
    ax.axhline(vision, color="gray", ls="--", label="vision tower + projector")
    ax.set(xlabel="kept ratio r", ylabel="TFLOPs (full depth)", title=f"analytic FLOPs vs ratio ({title})")
    ax.legend(fontsize=8)
    files.append(_save(fig, out / "flops_vs_ratio.png"))

    batch = min(c["batch"] for c in cases)
    res = [c for c in cases if c["batch"] == batch]
    grids = sorted({tuple(c["grid"]) for c in res}, key=lambda g: (g[0] * g[1], g[0]))
    if len(grids) > 1:
        fig, axes = plt.subplots(1, 3, figsize=(15, 4))
        show = "globalcom2" if "globalcom2" in methods else (methods[0] if methods else None)

        def series(method, ratio, key):
            pts = []
            for g in grids:
                c = next(
                    (
                        c
                        for c in res
                        if tuple(c["grid"]) == g and c["method"] == method and math.isclose(c["ratio"], ratio)
                    ),
                    None,
                )
                if c is not None:
                    pts.append((c["tokens"]["images"][0]["before"], key(c)))
            return sorted(pts)

        def plot(ax, pts, *a, **k):
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], *a, **k)

        plot(
            axes[0],
            series("none", 1.0, lambda c: c[clock]["vision"]),
            "s--",
            color="gray",
            label="vision tower",
        )
        plot(
            axes[0], series("none", 1.0, lambda c: c[clock]["prefill"]), "o-", color="k", label="prefill r=1"
        )
        plot(axes[2], series("none", 1.0, lambda c: c["flops"]["total"] / 1e12), "o-", color="k", label="r=1")
        for r in ratios:
            if show and r < 1:
                plot(
                    axes[0],
                    series(show, r, lambda c: c[clock]["prefill"]),
                    "o-",
                    label=f"prefill {show} r={r:g}",
                )
                plot(
                    axes[2],
                    series(show, r, lambda c: c["flops"]["total"] / 1e12),
                    "o-",
                    label=f"{show} r={r:g}",
                )
            for m in methods:
                plot(
                    axes[1],
                    series(m, r, lambda c: c["tokens"]["images"][0]["after"]),
                    ".-",
                    label=f"{m} r={r:g}",
                )
        axes[0].set(
            xlabel="visual tokens per image (uncompressed)",
            ylabel=unit,
            title=f"time vs resolution (batch {batch})",
        )
        axes[1].set(
            xlabel="visual tokens per image (uncompressed)",
            ylabel="kept tokens",
            title="kept tokens vs resolution",
        )
        axes[2].set(
            xlabel="visual tokens per image (uncompressed)",
            ylabel="TFLOPs (full depth)",
            title="FLOPs vs resolution",
        )
        for ax in axes:
            ax.legend(fontsize=7)
        files.append(_save(fig, out / "cost_vs_resolution.png"))
    return files


def _flops_ratio(cases, base, ratio) -> float:
    vals = [
        c["flops"]["decoder_prefill"] / base["flops"]["decoder_prefill"]
        for c in cases
        if math.isclose(c["ratio"], ratio)
    ]
    return sum(vals) / len(vals)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def write_outputs(result: dict[str, Any], out: Path, plots_on: bool = True, log: Callable = print) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=1, default=_json_default))
    text = markdown(result)
    (out / "results.md").write_text(text)
    log("")
    log(text)
    if plots_on:
        try:
            for f in plots(result, out):
                log(f"plot: {f}")
        except ImportError:
            log(f"plots skipped: matplotlib is missing ({install_command('eval')} or pip install matplotlib)")


def _json_default(x: Any) -> Any:
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, tuple):
        return list(x)
    return str(x)
