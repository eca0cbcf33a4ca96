"""Blind audit: run the test suite against hand-written one-line bugs (a measurement, not CI).

A mutants file is a JSON list of ``{"id", "file", "old", "new", "what"}``: in ``file`` (a path
relative to the repository root) the text ``old``, which must occur exactly once, becomes
``new``; ``what`` says in words what a user would see. A mutant whose ``old`` text does not occur
exactly once (or whose file is gone) is reported *stale*, never run.

The working tree is never touched: the tracked and untracked-but-not-ignored files are copied to
a scratch folder (so uncommitted tests take part), each mutant is written there, the selected
tests run (``-x``: the first failure decides), and the file is restored. The copy is what gets
imported: it comes first on ``PYTHONPATH``, ``vtcompress/integrations`` and ``vtcompress/kernels``
there link to the copy's ``integrations/`` and ``kernels/`` (the layout the installed package
maps), and a check before the first run refuses to go on if any of the three imports from
elsewhere. No bytecode is written, so a restored file is never shadowed by a mutant's cache.

A mutant is *killed* when the tests fail (or error, or time out), *survives* when they pass.
Kill rate = killed / (killed + survived). The unmutated copy runs first and must pass.

    .venv/bin/python evals/audit.py                                   # evals/audit_mutants.json, fast suite
    .venv/bin/python evals/audit.py blind.json --tests "tests/methods -m 'not slow'" --timeout 900
    .venv/bin/python evals/audit.py --only merge-margin-layer --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MUTANTS = ROOT / "evals" / "audit_mutants.json"
DEFAULT_TESTS = "tests -m 'not slow'"
FIELDS = ("id", "file", "old", "new", "what")
# The installed package maps these folders into the vtcompress namespace (pyproject package-dir).
NAMESPACE_LINKS = {"vtcompress/integrations": "integrations", "vtcompress/kernels": "kernels"}


@dataclass
class Result:
    id: str
    status: str  # killed | survived | stale | error
    seconds: float
    what: str
    detail: str = ""


def load_mutants(path: Path) -> list[dict]:
    mutants = json.loads(path.read_text())
    if not isinstance(mutants, list):
        raise SystemExit(f"{path}: expected a JSON list of mutants")
    for i, m in enumerate(mutants):
        missing = [f for f in FIELDS if not isinstance(m.get(f), str)]
        if missing:
            raise SystemExit(f"{path}: mutant {i} lacks string field(s) {missing}; each needs {list(FIELDS)}")
    ids = [m["id"] for m in mutants]
    if len(set(ids)) != len(ids):
        raise SystemExit(f"{path}: mutant ids must be unique")
    return mutants


def stale_reason(root: Path, mutant: dict) -> str | None:
    """Why ``mutant`` cannot be applied to the tree at ``root`` (None: it applies)."""
    path = root / mutant["file"]
    if not path.is_file():
        return f"{mutant['file']} does not exist"
    count = path.read_text().count(mutant["old"])
    if count != 1:
        return f"'old' occurs {count} times in {mutant['file']} (must be exactly once)"
    if mutant["old"] == mutant["new"]:
        return "'old' and 'new' are the same"
    return None


def copy_tree(dest: Path) -> None:
    """The repository's tracked and untracked-not-ignored files, as they are in the working tree."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, listed):
        src = ROOT / os.fsdecode(name)
        if src.is_file() and not src.is_symlink():  # deleted-but-tracked files are skipped
            target = dest / os.fsdecode(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
    for link, folder in NAMESPACE_LINKS.items():
        (dest / link).symlink_to(dest / folder, target_is_directory=True)


def environment(copy: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(copy), *filter(None, [os.environ.get("PYTHONPATH")])]),
        "PYTHONDONTWRITEBYTECODE": "1",
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
    }


def check_imports_from(copy: Path, python: str) -> None:
    """Refuse to run if the copy's vtcompress (with integrations and kernels) is not what imports."""
    code = (
        "import vtcompress, vtcompress.integrations, vtcompress.kernels\n"
        "for m in (vtcompress, vtcompress.integrations, vtcompress.kernels): print(m.__file__)"
    )
    out = subprocess.run(
        [python, "-c", code], cwd=copy, env=environment(copy), capture_output=True, text=True, check=True
    ).stdout.split()
    outside = [f for f in out if not Path(f).resolve().is_relative_to(copy.resolve())]
    if len(out) != 3 or outside:
        raise SystemExit(f"the scratch copy is not what Python imports: {outside or out}")


def run_tests(copy: Path, python: str, tests: list[str], timeout: float) -> tuple[str, str]:
    """('passed' | 'failed' | 'timeout' | 'error', last lines of the report)."""
    cmd = [python, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    try:
        proc = subprocess.run(
            cmd, cwd=copy, env=environment(copy), capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return "timeout", f"no result in {timeout:.0f} s"
    tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-3:])
    # pytest: 0 passed, 1 tests failed, 2 interrupted (a collection error), 5 nothing collected
    return {0: "passed", 1: "failed", 2: "failed"}.get(proc.returncode, "error"), tail


def audit(mutants: list[dict], tests: list[str], timeout: float, python: str, log=print) -> list[Result]:
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="vtcompress-audit-") as tmp:
        copy = Path(tmp) / "repo"
        copy_tree(copy)
        check_imports_from(copy, python)
        start = time.perf_counter()
        outcome, tail = run_tests(copy, python, tests, timeout)
        if outcome != "passed":
            raise SystemExit(f"the unmutated tests do not pass ({outcome}); fix that first:\n{tail}")
        log(f"baseline: passed in {time.perf_counter() - start:.0f} s")
        for mutant in mutants:
            reason = stale_reason(copy, mutant)
            if reason is not None:
                results.append(Result(mutant["id"], "stale", 0.0, mutant["what"], reason))
                log(f"{mutant['id']}: stale ({reason})")
                continue
            path = copy / mutant["file"]
            original = path.read_text()
            path.write_text(original.replace(mutant["old"], mutant["new"], 1))
            start = time.perf_counter()
            try:
                outcome, tail = run_tests(copy, python, tests, timeout)
            finally:
                path.write_text(original)
            status = {"failed": "killed", "timeout": "killed", "passed": "survived"}.get(outcome, "error")
            seconds = time.perf_counter() - start
            results.append(
                Result(mutant["id"], status, seconds, mutant["what"], tail if status != "survived" else "")
            )
            log(f"{mutant['id']}: {status} ({outcome}, {seconds:.0f} s)")
    return results


def machine() -> str:
    try:
        import torch

        torch_version = torch.__version__
        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    except ImportError:
        torch_version, gpu = "not installed", "no GPU"
    return (
        f"{os.cpu_count()}-core {platform.machine()} CPU, {gpu}, torch {torch_version}, "
        f"python {platform.python_version()}"
    )


def report(results: list[Result], tests: list[str]) -> str:
    counts = {s: sum(r.status == s for r in results) for s in ("killed", "survived", "stale", "error")}
    judged = counts["killed"] + counts["survived"]
    rate = f"{counts['killed'] / judged:.1%}" if judged else "n/a"
    lines = [
        f"# audit: {len(results)} mutants, tests: {shlex.join(tests)}",
        f"# machine: {machine()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
    ]
    for r in results:
        lines.append(f"{r.status:9s} {r.id:32s} {r.seconds:7.1f} s  {r.what}")
    lines.append(
        f"killed {counts['killed']}, survived {counts['survived']}, stale {counts['stale']}, "
        f"error {counts['error']}: kill rate {counts['killed']}/{judged} = {rate}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[Result]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mutants", nargs="?", default=str(DEFAULT_MUTANTS), help="JSON file of mutants")
    parser.add_argument(
        "--tests", default=DEFAULT_TESTS, help=f"pytest selection (default: {DEFAULT_TESTS!r})"
    )
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per mutant (a timeout kills)")
    parser.add_argument("--only", nargs="+", default=None, help="run just these mutant ids")
    parser.add_argument("--python", default=sys.executable, help="interpreter that runs pytest")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    mutants = load_mutants(Path(args.mutants))
    if args.only:
        unknown = set(args.only) - {m["id"] for m in mutants}
        if unknown:
            raise SystemExit(f"no mutant with id {sorted(unknown)} in {args.mutants}")
        mutants = [m for m in mutants if m["id"] in args.only]
    tests = shlex.split(args.tests)
    results = audit(mutants, tests, args.timeout, args.python)
    print(report(results, tests))
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in results], indent=1) + "\n")
    return results


if __name__ == "__main__":
    main()
