"""The layering the design promises, checked on the source: kernels <- core <- methods <- hosts
<- apps. The core never imports transformers or a host; no module imports itself back."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {
    "vtcompress": ROOT / "vtcompress",
    "vtcompress.integrations": ROOT / "integrations",
    "vtcompress.kernels": ROOT / "kernels",
}
# Dependency-free helpers every layer may use (checked below: they import nothing of vtcompress).
LEAVES = {"vtcompress.hints"}


def modules() -> dict[str, Path]:
    out = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join((package, *parts))] = path
    return out


def imports(path: Path) -> set[str]:
    """Every module an ``import`` statement names, at any depth (lazy imports count too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def core_modules(mods: dict[str, Path]) -> dict[str, Path]:
    return {
        name: path
        for name, path in mods.items()
        if name.startswith("vtcompress")
        and not name.startswith(("vtcompress.integrations", "vtcompress.kernels"))
    }


def test_core_imports_no_model_library_and_no_host():
    bad = {}
    for name, path in core_modules(modules()).items():
        found = sorted(
            i
            for i in imports(path)
            if i.split(".")[0] == "transformers" or i.startswith("vtcompress.integrations")
        )
        if found:
            bad[name] = found
    assert not bad, f"core modules import a model library or a host: {bad}"


def test_methods_import_no_host_and_kernels_import_no_core():
    mods = modules()
    for name, path in mods.items():
        found = imports(path)
        if name.startswith("vtcompress.methods"):
            assert not any(i.startswith("vtcompress.integrations") for i in found), name
        if name.startswith("vtcompress.kernels"):
            assert not any(
                i.startswith("vtcompress.")
                and not i.startswith("vtcompress.kernels")
                and i not in LEAVES
                and i.rpartition(".")[0] not in LEAVES
                for i in found
            ), name
        if name in LEAVES:
            assert not any(i.startswith("vtcompress") for i in found), name


def test_no_import_cycles():
    mods = modules()
    known = set(mods)

    def resolve(target: str) -> str | None:
        while target and target not in known:  # `from a.b import c` names a.b.c: fall back to a.b
            target = target.rpartition(".")[0]
        return target or None

    graph = {
        name: {t for i in imports(path) if (t := resolve(i)) and t != name} for name, path in mods.items()
    }
    # A package's __init__ importing its own submodules is how Python packages work: not a cycle.
    for name in graph:
        graph[name] = {t for t in graph[name] if not t.startswith(name + ".")}
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"
