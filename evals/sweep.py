"""Sweep methods x ratios x tasks through the lmms-eval command line; tabulate and plot.

    python evals/sweep.py --pretrained llava-hf/llava-v1.6-vicuna-7b-hf \
        --methods globalcom2,fastervlm,uniform --ratios 0.111,0.25,0.5,1.0 \
        --tasks gqa,textvqa_val --batch-size 8 --num-processes 8 --out results/sweep

Each (method, ratio) is one ``lmms-eval`` run (``accelerate launch`` when --num-processes > 1)
over all tasks, with ``--log_samples``; ratio 1.0 is the uncompressed model, run once and shared
by every method. Finished runs are reused unless --rerun. Writes to --out:
``results.csv`` / ``results.md`` (one row per method, ratio, task, metric, with the mean visual
tokens kept and the mean analytic prefill FLOPs from the logged samples) and ``score_vs_ratio.png``
/ ``score_vs_flops.png`` (each task's primary metric). lmms-eval exits 0 even when every request
failed, so a run counts as done only when its results file exists; empty answers are counted, and
so are the samples the model could not process (logged with their error): the sweep ends by
saying how many failed and exits with code 1 if any did.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from vtcompress.integrations.lmms_eval import model_ids

MODELS = tuple(model_ids())  # every declared family's lmms-eval model
DEFAULT_MODEL = "vtcompress_llava_next"
DEFAULT_INCLUDE = Path(__file__).resolve().parent / "tasks"
UNCOMPRESSED = "none"
# The headline metric of each task, as the papers report it; other tasks use their first metric.
PRIMARY_METRIC = {
    "gqa": "exact_match",
    "textvqa_val": "exact_match",
    "pope": "pope_f1_score",
    "mme": "mme_perception_score",
    "mmbench_en_dev": "gpt_eval_score",
    "scienceqa_img": "exact_match",
    "docvqa_val": "anls",
    "chartqa": "relaxed_overall",
    "infovqa_val": "anls",
    "vtc_shapes_qa": "exact_match",
    "vtc_document_qa": "anls",
}


@dataclass(frozen=True)
class Run:
    method: str
    ratio: float

    @property
    def name(self) -> str:
        return f"{self.method}_r{self.ratio:g}"


@dataclass
class Row:
    method: str
    ratio: float
    task: str
    metric: str
    score: float
    samples: int
    empty_answers: int
    failed: int
    visual_tokens_before: float
    visual_tokens_kept: float
    kept_fraction: float
    prefill_flops: float
    prefill_flops_fraction: float
    prefill_seconds: float


def plan_runs(methods: list[str], ratios: list[float]) -> list[Run]:
    """Every method at every ratio below 1, plus one shared uncompressed run if 1.0 is asked."""
    runs = [Run(m, r) for m in methods for r in sorted(set(ratios), reverse=True) if r < 1.0]
    if any(r >= 1.0 for r in ratios):
        runs.insert(0, Run(UNCOMPRESSED, 1.0))
    return runs


def lmms_eval_command(run: Run, args: argparse.Namespace, out_dir: Path) -> list[str]:
    method = methods_for_model_args(run, args)
    model_args = (
        f"pretrained={args.pretrained},method={method},ratio={run.ratio:g},batch_size={args.batch_size}"
    )
    if args.model_args:
        model_args += f",{args.model_args}"
    if args.num_processes > 1:
        # --multi_gpu also starts N processes without GPUs: accelerate then uses gloo on the CPU.
        launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu"]
        launcher += ["--num_processes", str(args.num_processes), "--num_machines", "1"]
        launcher += [
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "--main_process_port",
            str(args.port),
        ]
        launcher += ["-m", "lmms_eval"]
    else:
        launcher = [sys.executable, "-m", "lmms_eval"]
    cmd = launcher + ["--model", args.model, "--model_args", model_args, "--tasks", args.tasks]
    cmd += ["--batch_size", str(args.batch_size), "--output_path", str(out_dir), "--log_samples"]
    if args.include_path:
        cmd += ["--include_path", str(args.include_path)]
    if args.limit:
        cmd += ["--limit", str(args.limit)]
    return cmd


def methods_for_model_args(run: Run, args: argparse.Namespace) -> str:
    # At ratio 1.0 the method is switched off; any registered name will do.
    return run.method if run.method != UNCOMPRESSED else args.methods.split(",")[0]


def find_results(run_dir: Path) -> Path | None:
    found = sorted(run_dir.rglob("*_results.json"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def execute(run: Run, args: argparse.Namespace, root: Path) -> Path:
    """Run lmms-eval for ``run`` unless its results exist; return the results file."""
    run_dir = root / "runs" / run.name
    existing = find_results(run_dir)
    if existing and not args.rerun:
        return existing
    run_dir.mkdir(parents=True, exist_ok=True)
    cmd = lmms_eval_command(run, args, run_dir)
    (run_dir / "command.txt").write_text(" ".join(cmd) + "\n")
    with open(run_dir / "log.txt", "w") as log:
        subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=False, env=os.environ.copy())
    results = find_results(run_dir)
    if results is None:
        tail = (run_dir / "log.txt").read_text()[-3000:]
        raise RuntimeError(
            f"lmms-eval wrote no results for {run.name}; end of {run_dir / 'log.txt'}:\n{tail}"
        )
    return results


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def sample_summary(samples_file: Path) -> dict[str, float]:
    """Means over the logged samples of one task: tokens, FLOPs, prefill time, empty answers."""
    records, empty, failed = [], 0, 0
    for line in samples_file.read_text().splitlines():
        sample = json.loads(line)
        answer = sample.get("filtered_resps", sample.get("resps"))
        while isinstance(answer, list):
            answer = answer[0] if answer else ""
        empty += not str(answer).strip()
        counts = (sample.get("token_counts") or [None])[0] or {}
        record = counts.get("vtcompress")
        if record and record.get("failed"):
            failed += 1
        elif record:
            records.append(record)
    flops_before = _mean([r["prefill_flops_before"] for r in records])
    flops_after = _mean([r["prefill_flops_after"] for r in records])
    return {
        "samples": len(records) + failed,
        "empty_answers": empty,
        "failed": failed,
        "visual_tokens_before": _mean([r["visual_tokens_before"] for r in records]),
        "visual_tokens_kept": _mean([r["visual_tokens_kept"] for r in records]),
        "kept_fraction": _mean([r["kept_fraction"] for r in records]),
        "prefill_flops": flops_after,
        "prefill_flops_fraction": flops_after / flops_before if flops_before else float("nan"),
        "prefill_seconds": _mean([r["timing"]["prefill_seconds"] for r in records]),
    }


def collect_rows(run: Run, results_file: Path) -> list[Row]:
    results = json.loads(results_file.read_text())["results"]
    rows = []
    for task, metrics in sorted(results.items()):
        samples = sorted(results_file.parent.glob(f"*_samples_{task}.jsonl"))
        if not samples:
            continue  # a group's aggregate entry: its tasks have their own rows
        summary = sample_summary(samples[-1])
        for key, value in metrics.items():
            metric, _, _ = key.partition(",")
            if metric == "alias" or "_stderr" in metric or not isinstance(value, (int, float)):
                continue
            rows.append(Row(run.method, run.ratio, task, metric, float(value), **summary))
    return rows


def primary_rows(rows: list[Row], metric: str | None = None) -> list[Row]:
    """Each task's headline metric (``metric`` if given, else PRIMARY_METRIC or the first)."""
    chosen: dict[str, str] = {}
    for row in rows:
        chosen.setdefault(row.task, metric or PRIMARY_METRIC.get(row.task, row.metric))
    return [r for r in rows if r.metric == chosen[r.task]]


def write_table(rows: list[Row], out: Path) -> None:
    fields = list(asdict(rows[0])) if rows else list(Row.__dataclass_fields__)
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(asdict(r) for r in rows)
    header = (
        "| method | ratio | task | metric | score | visual tokens kept | kept | prefill GFLOPs | prefill s "
        "| empty | failed |"
    )
    lines = [header, "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r.method} | {r.ratio:g} | {r.task} | {r.metric} | {r.score:.4f} | "
            f"{r.visual_tokens_kept:.1f} / {r.visual_tokens_before:.1f} | {r.kept_fraction:.3f} | "
            f"{r.prefill_flops / 1e9:.3f} | {r.prefill_seconds:.3f} | {r.empty_answers}/{r.samples} "
            f"| {r.failed}/{r.samples} |"
        )
    (out / "results.md").write_text("\n".join(lines) + "\n")


def plot(rows: list[Row], out: Path) -> list[Path]:
    """score vs ratio and score vs prefill FLOPs, one panel per task, one line per method."""
    if not rows:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({r.task for r in rows})
    methods = sorted({r.method for r in rows} - {UNCOMPRESSED})
    paths = []
    for x_field, x_label, name in (
        ("ratio", "kept ratio of visual tokens", "score_vs_ratio.png"),
        ("prefill_flops", "prefill FLOPs (decoder, analytic, mean per sample)", "score_vs_flops.png"),
    ):
        fig, axes = plt.subplots(1, len(tasks), figsize=(4.5 * len(tasks), 3.6), squeeze=False)
        for ax, task in zip(axes[0], tasks):
            task_rows = [r for r in rows if r.task == task]
            base = [r for r in task_rows if r.method == UNCOMPRESSED]
            for method in methods or [UNCOMPRESSED]:
                points = sorted(
                    [r for r in task_rows if r.method == method] + base, key=lambda r: getattr(r, x_field)
                )
                ax.plot([getattr(r, x_field) for r in points], [r.score for r in points], "o-", label=method)
            ax.set_title(f"{task} ({task_rows[0].metric})" if task_rows else task)
            ax.set_xlabel(x_label)
            ax.set_ylabel("score")
            if x_field == "prefill_flops":
                ax.set_xscale("log")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / name, dpi=120)
        plt.close(fig)
        paths.append(out / name)
    return paths


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=DEFAULT_MODEL, choices=MODELS, help="lmms-eval model of vtcompress")
    p.add_argument("--pretrained", required=True, help="hub id, local directory, or 'tiny' (LLaVA-NeXT)")
    p.add_argument("--methods", default="globalcom2", help="comma-separated method names")
    p.add_argument("--ratios", default="0.25,1.0", help="comma-separated kept ratios in (0, 1]")
    p.add_argument("--tasks", default="vtc_offline", help="lmms-eval tasks, groups or tags (comma-separated)")
    p.add_argument("--include-path", default=str(DEFAULT_INCLUDE), help="extra task folder ('' for none)")
    p.add_argument("--limit", type=float, default=None, help="lmms-eval --limit (testing only)")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--num-processes", type=int, default=1, help=">1: accelerate launch, sharded by rank")
    p.add_argument("--port", type=int, default=29511, help="accelerate main process port")
    p.add_argument("--model-args", default="", help="extra model_args, e.g. dtype=bfloat16,allocation=paper")
    p.add_argument("--metric", default=None, help="metric to plot for every task (default: each task's own)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--rerun", action="store_true", help="run again even where results exist")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> list[Row]:
    from tqdm import tqdm

    args = parse_args(argv)
    ratios = [float(r) for r in args.ratios.split(",")]
    if any(not 0.0 < r <= 1.0 for r in ratios):
        raise SystemExit(f"--ratios must lie in (0, 1], got {args.ratios}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    runs = plan_runs(args.methods.split(","), ratios)
    with tqdm(runs, desc="sweep", unit="run") as bar:
        for run in bar:
            bar.set_postfix_str(run.name)
            rows += collect_rows(run, execute(run, args, out))
    write_table(rows, out)
    plot(primary_rows(rows, args.metric), out)
    print((out / "results.md").read_text())
    print(failure_summary(rows))
    return rows


def failure_summary(rows: list[Row]) -> str:
    """One line: how many samples failed, over every run and task (each task counted once)."""
    per_task = {(r.method, r.ratio, r.task): (r.failed, r.samples) for r in rows}
    failed = sum(f for f, _ in per_task.values())
    total = sum(n for _, n in per_task.values())
    where = ", ".join(f"{m} r={ratio:g} {t}: {f}" for (m, ratio, t), (f, _) in per_task.items() if f)
    line = f"sweep: {failed} of {total} samples failed"
    return line + (f" ({where}; their errors are in the runs' *_samples_*.jsonl)" if failed else "")


def exit_code(rows: list[Row]) -> int:
    return 1 if any(r.failed for r in rows) else 0


if __name__ == "__main__":
    sys.exit(exit_code(main()))
