"""Every public name the API docs show reaches a test, and every exported name is documented.

The public surface is:

* ``vtcompress.__all__``;
* every identifier in a code span or code block of docs/api.md and docs/methods/*.md that names
  an attribute of ``vtcompress``, ``vtcompress.merge``, an exported class (dataclass fields and
  properties included), a stats class or the handle
  (``x_before/after`` names both) -- e.g. ``last_stats``, ``kept_fraction``,
  ``flops_saved``, ``merge_owner``, ``bipartite_until``.

A name counts as *touched* when it occurs as a whole word in the code (comments stripped) of some
test file under tests/ other than this one. That is a floor, not a proof that the name's value
is asserted; it catches a documented name no test mentions at all, which is how a wrong public
value can pass every test.
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import re
import tokenize
from pathlib import Path

import vtcompress as vtc
import vtcompress.merge
import vtcompress.stats

ROOT = Path(__file__).resolve().parents[2]
DOC_PAGES = [ROOT / "docs" / "api.md", *sorted((ROOT / "docs" / "methods").glob("*.md"))]


def _owners() -> list[object]:
    """Where a documented public name may live."""
    classes = [getattr(vtc, n) for n in vtc.__all__ if isinstance(getattr(vtc, n), type)]
    stats = [c for c in vars(vtcompress.stats).values() if dataclasses.is_dataclass(c)]
    return [vtc, vtcompress.merge, *classes, *stats]


def _names_of(owner: object) -> set[str]:
    names = {n for n in dir(owner) if not n.startswith("_")}
    if dataclasses.is_dataclass(owner):
        names |= {f.name for f in dataclasses.fields(owner)}
    return names


def documented_surface() -> dict[str, str]:
    """name -> the page that documents it."""
    public = set().union(*(_names_of(o) for o in _owners()))
    # the handle's instance attributes (model, config, last_stats)
    public |= set(
        re.findall(r"self\.([a-z][a-z_]*)\s*[:=]", inspect.getsource(vtc.CompressionHandle.__init__))
    )
    found: dict[str, str] = {}
    for page in DOC_PAGES:
        text = page.read_text()
        spans = re.findall(r"```.*?```", text, flags=re.S) + re.findall(r"`([^`\n]+)`", text)
        for span in spans:
            span = re.sub(r"(\w+)_before/after", r"\1_before \1_after", span)  # tokens_before/after
            for word in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", span):
                if word in public and not word.startswith("_"):
                    found.setdefault(word, page.name)
    for name in vtc.__all__:
        found.setdefault(name, "vtcompress.__all__")
    return found


def source_without_comments(path: Path) -> str:
    """The file's source without comments (docstrings and strings stay: names in them count)."""
    out = []
    for tok in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
        if tok.type != tokenize.COMMENT:
            out.append(tok.string)
    return " ".join(out)


def touched_words() -> set[str]:
    words: set[str] = set()
    for path in (ROOT / "tests").rglob("*.py"):
        if path.resolve() != Path(__file__).resolve():
            words |= set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", source_without_comments(path)))
    return words


def test_every_documented_public_name_is_touched_by_a_test():
    surface = documented_surface()
    expected = {
        "last_stats",
        "kept_fraction",
        "flops_saved",
        "prefill_flops_after",
        "merge_owner",
        "bipartite_until",
    }
    assert expected <= set(surface)
    touched = touched_words()
    untouched = sorted(f"{name} ({page})" for name, page in surface.items() if name not in touched)
    assert not untouched, f"public names no test touches: {untouched}"


def test_every_exported_name_is_documented():
    docs = " ".join(p.read_text() for p in (ROOT / "docs").rglob("*.md"))
    missing = [name for name in vtc.__all__ if not re.search(rf"\b{re.escape(name)}\b", docs)]
    assert not missing, f"exported but not in docs/: {missing}"
    assert all(hasattr(vtc, name) for name in vtc.__all__)
