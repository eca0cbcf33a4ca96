"""Mutation-testing benchmark of the core modules (mutmut 3; a measurement, not part of CI).

A scratch copy of the repository is made (library code from ``--code-ref``, ``tests/`` from
``--tests-ref``; the worktree is never touched); mutmut mutates the core modules there and runs
the union of their fast test subsets (``MODULES``) against every mutant, or a seeded sample per
module. Per mutant, mutmut runs only the tests that executed the mutated function in the clean
run, stopping at the first failure.

    pip install mutmut==3.8.1
    nice -n 10 .venv/bin/python evals/mutation.py --sample 25 --out evals/results/cpu-2core/mutation.txt
    nice -n 10 .venv/bin/python evals/mutation.py --label before --tests-ref <commit> --sample 25 --out ...

A mutant is *killed* when a test fails (or it times out: an infinite loop is a detected change);
it *survives* when every test passes, and counts as *no tests* when no test of the subset runs the
mutated function. Score = killed / all tried. Survivors are printed with their diff so each can be
given a test or explained as equivalent.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# module -> (file mutated, fast tests that exercise it). Files missing at --tests-ref are skipped.
MODULES: dict[str, tuple[str, list[str]]] = {
    "budget": (
        "vtcompress/budget.py",
        [
            "tests/core/test_budget_rules.py",
            "tests/core/test_layout_budget.py",
            "tests/methods/test_globalcom2.py",
            "tests/methods/test_baseline_selection.py",
            "tests/methods/test_globalcom2_kept_tokens.py",
            "tests/methods/test_tokencorr_ops.py",
        ],
    ),
    "layout": (
        "vtcompress/layout.py",
        [
            "tests/core/test_layout_geometry.py",
            "tests/core/test_layout_budget.py",
            "tests/methods/test_globalcom2.py",
            "tests/methods/test_baseline_selection.py",
            "tests/methods/test_globalcom2_kept_tokens.py",
            "tests/methods/test_stats_match_the_model_input.py",
            "tests/hosts/test_llava_next.py",
        ],
    ),
    "sequence": (
        "vtcompress/sequence.py",
        [
            "tests/core/test_sequence_shortening.py",
            "tests/methods/test_stats_match_the_model_input.py",
            "tests/hosts/test_llava_next.py",
        ],
    ),
    "baselines": (
        "vtcompress/methods/baselines.py",
        [
            "tests/methods/test_baseline_selection.py",
            "tests/methods/test_stats_match_the_model_input.py",
            "tests/hosts/test_llava_next.py",
        ],
    ),
    "globalcom2": (
        "vtcompress/methods/globalcom2.py",
        [
            "tests/methods/test_globalcom2.py",
            "tests/methods/test_globalcom2_kept_tokens.py",
            "tests/methods/test_stats_match_the_model_input.py",
            "tests/hosts/test_llava_next.py",
        ],
    ),
    "tokencorr_ops": (
        "vtcompress/methods/tokencorr_ops.py",
        ["tests/methods/test_tokencorr_ops.py", "tests/methods/test_tokencorr_method.py"],
    ),
    "merge": (
        "vtcompress/merge.py",
        ["tests/methods/test_pitome_merge.py", "tests/methods/test_merge_ties.py"],
    ),
    "flops": ("vtcompress/flops.py", ["tests/core/test_flops_counted.py", "tests/apps/test_bench.py"]),
}

KILLED = {"killed", "timeout", "segfault", "caught by type check"}


def sh(cmd: list[str], cwd: Path, timeout: float | None = None, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def export(ref: str, paths: list[str], dest: Path) -> None:
    """Write ``paths`` of git ``ref`` into ``dest`` (no checkout, no change to the worktree)."""
    archive = subprocess.run(["git", "archive", ref, *paths], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)


CLEAR_CACHES = '''"""pytest plugin of the mutation run: every test session starts with empty vtcompress caches.

Workers fork from the process that ran the clean tests; a layout cached there would hide a
mutant of the function that computed it.
"""
import sys


def pytest_sessionstart(session):
    for name, module in list(sys.modules.items()):
        if name.startswith("vtcompress"):
            for value in list(vars(module).values()):
                if callable(getattr(value, "cache_clear", None)):
                    value.cache_clear()
'''


def prepare(work: Path, files: list[str], tests: list[str], code_ref: str, tests_ref: str):
    """Scratch copy with a mutmut config; returns the test files that exist there and, per
    mutated file, the functions whose decorators were unwrapped."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    export(code_ref, ["."], work)
    shutil.rmtree(work / "tests")
    export(tests_ref, ["tests"], work)
    present = [t for t in tests if (work / t).exists()]
    unwrapped = {f: unwrap_decorators(work / f) for f in files}
    (work / "mutation_clear_caches.py").write_text(CLEAR_CACHES)
    lines = [
        "[mutmut]",
        "source_paths = vtcompress",
        "only_mutate =",
        *[f"    {f}" for f in files],
        "also_copy =",
        "    evals",  # tests/apps/test_bench.py imports the benchmark scripts
        "    mutation_clear_caches.py",
        # One argument a line: mutmut passes a one-line value to pytest as a single argument.
        "pytest_add_cli_args =",
        "    -p",
        "    no:cacheprovider",
        "    -p",
        "    mutation_clear_caches",
        "    -m",
        "    not slow",
        "pytest_add_cli_args_test_selection =",
        *[f"    {t}" for t in present],
    ]
    (work / "setup.cfg").write_text("\n".join(lines) + "\n")
    return present, unwrapped


def unwrap_decorators(path: Path) -> list[str]:
    """Rewrite ``@deco def f`` at module level as ``def f`` + ``f = deco(f)`` (same behaviour).

    mutmut 3 never mutates decorated functions (a decorator runs at definition time), which would
    leave every registered compressor (``@register_method``) and the cached layout helpers out.
    Returns the names rewritten.
    """
    import ast

    source = path.read_text()
    lines = source.splitlines()
    tree = ast.parse(source)
    edits = []  # (first decorator line, last decorator line, function end line, name, decorators)
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.decorator_list:
            decos = [ast.get_source_segment(source, d) for d in node.decorator_list]
            start = min(d.lineno for d in node.decorator_list)
            edits.append((start, node.lineno - 1, node.end_lineno, node.name, decos))
    for start, last_deco, end, name, decos in reversed(edits):
        wrapped = name
        for deco in reversed(decos):
            wrapped = f"({deco})({wrapped})"
        lines[end:end] = [f"{name} = {wrapped}"]
        del lines[start - 1 : last_deco]
    path.write_text("\n".join(lines) + "\n")
    return [e[3] for e in edits]


def exit_codes(work: Path, module_file: str) -> dict[str, int | None]:
    meta = work / "mutants" / (module_file + ".meta")
    return json.loads(meta.read_text())["exit_code_by_key"] if meta.exists() else {}


def run(modules: list[str], args, mutmut: Path, env) -> list[dict]:
    """One mutmut session over every module (one clean run of the union of their tests; per
    mutant, mutmut runs only the tests that executed the mutated function)."""
    files = [MODULES[m][0] for m in modules]
    tests = list(dict.fromkeys(t for m in modules for t in MODULES[m][1]))
    work = Path(args.workdir) / args.label
    present, unwrapped = prepare(work, files, tests, args.code_ref, args.tests_ref)
    start = time.monotonic()
    # Pass 1: generate every mutant and record which tests run which function; the filter matches
    # nothing, so no mutant runs yet.
    proc = sh([str(mutmut), "run", "--max-children", "1", "__generate_only__"], work, env=env)
    if "failed to collect stats" in proc.stdout + proc.stderr:
        raise RuntimeError(f"the clean run of the tests failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    names = {m: sorted(exit_codes(work, MODULES[m][0])) for m in modules}
    chosen = {}
    for m in modules:
        chosen[m] = names[m]
        if args.only:  # re-check given mutants (e.g. the survivors of an earlier run)
            chosen[m] = [n for n in names[m] if n in args.only]
        elif args.sample and len(names[m]) > args.sample:
            chosen[m] = sorted(random.Random(f"{args.seed}-{m}").sample(names[m], args.sample))
    timed_out = False
    try:
        proc = sh(
            [str(mutmut), "run", "--max-children", "1", *[n for m in modules for n in chosen[m]]],
            work,
            timeout=args.minutes * 60,
            env=env,
        )
        if "Failed to run clean test" in proc.stdout:
            raise RuntimeError(f"the clean test run failed:\n{proc.stdout[-3000:]}")
    except subprocess.TimeoutExpired:
        timed_out = True
    from mutmut.stats import status_by_exit_code

    results = []
    for m in modules:
        codes = exit_codes(work, MODULES[m][0])
        status = {n: status_by_exit_code[codes.get(n)] for n in chosen[m]}
        survivors = {}
        for n, st in status.items():
            if st in ("survived", "no tests", "not checked"):
                diff = sh([str(mutmut), "show", n], work, env=env).stdout
                survivors[n] = (st, [ln for ln in diff.splitlines() if ln[:2] in ("- ", "+ ")])
        results.append(
            dict(
                module=m,
                file=MODULES[m][0],
                tests=[t for t in MODULES[m][1] if t in present],
                unwrapped=unwrapped[MODULES[m][0]],
                total=len(names[m]),
                tried=len(chosen[m]),
                counts=Counter(status.values()),
                survivors=survivors,
            )
        )
    return results, time.monotonic() - start, timed_out


def report(results: list[dict], seconds: float, timed_out: bool, header: str) -> str:
    out = [header, ""]
    out.append(
        f"{'module':<14} {'mutants':>7} {'tried':>5} {'killed':>6} {'survived':>8} {'no tests':>8} {'other':>5} {'score':>6}"
    )
    total_k = total_t = 0
    for r in results:
        c = r["counts"]
        killed = sum(c[s] for s in KILLED)
        other = r["tried"] - killed - c["survived"] - c["no tests"]
        score = killed / r["tried"] if r["tried"] else float("nan")
        total_k, total_t = total_k + killed, total_t + r["tried"]
        out.append(
            f"{r['module']:<14} {r['total']:>7} {r['tried']:>5} {killed:>6} {c['survived']:>8} {c['no tests']:>8} "
            f"{other:>5} {score:>6.1%}"
        )
    out.append(
        f"{'all':<14} {'':>7} {total_t:>5} {total_k:>6} {'':>8} {'':>8} {'':>5} {total_k / max(total_t, 1):>6.1%}"
    )
    out.append(
        f"wall time {seconds / 60:.1f} min"
        + (" (time box hit: 'other' = not tried, counted as not killed)" if timed_out else "")
    )
    for r in results:
        out += ["", f"## {r['module']} ({r['file']}); tests: {' '.join(r['tests']) or '(none)'}"]
        if r["unwrapped"]:
            out.append(f"decorators unwrapped so they are mutated too: {', '.join(r['unwrapped'])}")
        for m, (s, diff) in r["survivors"].items():
            out.append(f"{s}: {m}")
            out += [f"    {ln}" for ln in diff]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--modules", default=",".join(MODULES), help="comma-separated subset of: " + ", ".join(MODULES)
    )
    parser.add_argument("--label", default="after", help="name of this run in the report")
    parser.add_argument("--code-ref", default="HEAD", help="git ref of the library code that is mutated")
    parser.add_argument(
        "--tests-ref", default="HEAD", help="git ref whose tests/ folder runs against the mutants"
    )
    parser.add_argument(
        "--sample", type=int, default=0, help="at most this many mutants per module (seeded); 0: all"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="+", default=None, help="run just these mutants (names as reported)")
    parser.add_argument("--minutes", type=float, default=30.0, help="time box of the mutant runs")
    parser.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "vtcompress-mutation"))
    parser.add_argument("--out", default=None, help="append the report to this file")
    args = parser.parse_args(argv)
    if os.nice(0) < 10:
        os.nice(10 - os.nice(0))  # the machine is shared: never compete with interactive work
    mutmut = Path(sys.executable).parent / "mutmut"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    version = sh([str(mutmut), "--version"], ROOT).stdout.strip()
    import torch

    commit = sh(["git", "rev-parse", "--short", args.code_ref], ROOT).stdout.strip()
    tests_commit = sh(["git", "rev-parse", "--short", args.tests_ref], ROOT).stdout.strip()
    header = (
        f"# mutation run '{args.label}': code {commit}, tests {tests_commit}, {version}, "
        + (
            f"only the {len(args.only)} mutants named\n"
            if args.only
            else f"sample {args.sample or 'all'} per module (seed {args.seed})\n"
        )
        + f"# machine: {os.cpu_count()}-core {platform.machine()} CPU (shared), no GPU, torch {torch.__version__}, "
        f"python {platform.python_version()}, one mutmut worker at nice 10, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )
    results, seconds, timed_out = run(args.modules.split(","), args, mutmut, env)
    text = report(results, seconds, timed_out, header)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "a") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
