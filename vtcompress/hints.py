"""Install hints that are right for this installation.

Running from a checkout (``pip install -e .``), the hint is ``pip install -e ".[extra]"``:
``vtcompress[extra]`` would fetch another copy of vtcompress from the index. Installed from a
wheel or an index, it is ``pip install "vtcompress[extra]"``.
"""

from __future__ import annotations

from pathlib import Path


def source_checkout() -> Path | None:
    """The repository this vtcompress runs from, or None when it is installed (site-packages)."""
    root = Path(__file__).resolve().parents[1]
    if (root / "pyproject.toml").is_file() and (root / "integrations").is_dir():
        return root
    return None


def install_command(extra: str) -> str:
    """The pip command that adds ``extra`` (e.g. "demo") to this installation of vtcompress."""
    checkout = source_checkout()
    if checkout is None:
        return f'pip install "vtcompress[{extra}]"'
    where = "." if Path.cwd().resolve() == checkout else str(checkout)
    return f'pip install -e "{where}[{extra}]"'


def needs_extra(what: str, extra: str) -> str:
    """One line: ``what`` (e.g. "the demo needs gradio") and the command that installs it."""
    return f"{what}: {install_command(extra)}"
