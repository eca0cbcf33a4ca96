"""The methods x hosts tables of README.md and docs/index.md, checked against what the hosts serve
(:mod:`vtcompress.served`): every method has a row, and a cell says "no ..." exactly where the
host refuses the method by name. Run by ``test_docs_tables.py``; :func:`table_problems` names
every mismatch, so a new method or host learns which cells to write.
"""

from __future__ import annotations

import re
from pathlib import Path

from vtcompress.hosts import host_specs
from vtcompress.registry import available_methods
from vtcompress.served import serves

ROOT = Path(__file__).resolve().parents[2]
TABLES = ("README.md", "docs/index.md")


def column(header: list[str], display_name: str) -> int | None:
    """The column of a family: its header holds the family's display name ("LLaVA-NeXT
    (transformers)"), or is a shorter form of it ("DocOwl1.5" for "mPLUG-DocOwl1.5")."""
    for i, text in enumerate(header):
        text = text.replace("`", "")
        if display_name in text or text.split(" (")[0] in display_name:
            return i
    return None


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def read_table(text: str) -> tuple[list[str], dict[str, list[str]]]:
    """The methods table of a markdown page: its header cells and, per method name (the first
    backticked name of a row's first cell), the row's cells."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        header = _cells(line) if line.startswith("|") else []
        if header and header[0] in ("method", "name") and any("LLaVA-NeXT" in h for h in header):
            rows = {}
            for row in lines[i + 2 :]:
                if not row.startswith("|"):
                    break
                cells = _cells(row)
                name = re.search(r"`([^`]+)`", cells[0])
                if name:
                    rows[name.group(1)] = cells
            return header, rows
    raise ValueError("no methods x hosts table found")


def table_problems(root: Path = ROOT) -> list[str]:
    """Every mismatch between the tables and what the hosts serve, one line each."""
    problems = []
    for page in TABLES:
        header, rows = read_table((root / page).read_text())
        for method in available_methods():
            if method not in rows:
                problems.append(f"{page}: method {method!r} has no row in the methods x hosts table")
                continue
            for spec in host_specs():
                index = column(header[1:], spec.display_name)
                if index is None:
                    continue  # this page has no column for the family
                cell = rows[method][index + 1]
                documented = not cell.lower().startswith("no")
                actual = serves(spec.load("host"), method)
                if documented != actual:
                    says = "served" if documented else "refused"
                    problems.append(
                        f"{page}: {method} on {spec.display_name} is {says} in the table ({cell!r}), but "
                        f"the host {'serves' if actual else 'refuses'} it"
                    )
    return problems
