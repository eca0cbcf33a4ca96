"""MkDocs hook (``hooks:`` in mkdocs.yml): every page under ``docs/methods/`` is in the nav's
"Methods" section, listed there or not, so a method's docs page needs no nav line."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def on_config(config: Any) -> Any:
    for entry in config["nav"] or []:
        if isinstance(entry, dict) and "Methods" in entry:
            section = entry["Methods"]
            listed = {next(iter(e.values())) if isinstance(e, dict) else e for e in section}
            for page in sorted(Path(config["docs_dir"], "methods").glob("*.md")):
                if f"methods/{page.name}" not in listed:
                    section.append(f"methods/{page.name}")  # titled by the page's first heading
    return config
