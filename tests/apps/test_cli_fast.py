"""The ``vtcompress`` command answers --version, --help and bad command lines without importing
torch or transformers (several seconds each); the model library is imported only to load a model."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "gradio")


def _python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def test_help_version_and_argument_errors_import_no_model_library(tmp_path):
    blank = tmp_path / "blank.png"
    blank.write_bytes(b"not an image")
    argvs = [
        ["--version"],
        ["--help"],
        ["run", "--help"],
        ["demo", "--help"],
        ["bogus"],
        ["run", "--ratio", "2"],
        ["run", "--method", "nope"],
        ["run", "--repeats", "0"],
        ["run", "--device", "gpu0"],
        ["run", "--question", " "],
        ["run", "--image", str(tmp_path / "missing.png")],
        ["run", "--image", str(blank)],
    ]
    code = f"""
import contextlib, io, json, sys
from vtcompress.integrations.cli import main
seen = {{}}
for argv in {argvs!r}:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            status = main(argv)
        except SystemExit as exit_:
            status = exit_.code
    seen[" ".join(argv)] = [status, [m for m in {HEAVY!r} if m in sys.modules]]
print(json.dumps(seen))
"""
    seen = json.loads(_python(code))
    assert {argv: heavy for argv, (_, heavy) in seen.items() if heavy} == {}
    assert {argv: status for argv, (status, _) in seen.items()} == {
        " ".join(argv): 0 if argv[-1] in ("--version", "--help") else 2 for argv in argvs
    }


@pytest.mark.slow
def test_transformers_is_imported_only_to_load_the_model():
    """Everything the run checks before loading (device, image, method options) uses no model library."""
    code = """
import sys
from vtcompress.integrations.cli import main
from vtcompress.integrations.cli import quickrun

def load(args, device):
    print("transformers" in sys.modules)
    raise SystemExit(0)

quickrun.load = load
main(["run", "--device", "cpu", "--method", "globalcom2", "--option", "allocation=paper"])
"""
    assert _python(code) == "False"


def test_import_vtcompress_is_light_and_its_names_resolve():
    code = """
import sys, vtcompress
light = not any(m in sys.modules for m in ("torch", "transformers"))
names = [n for n in vtcompress.__all__ if getattr(vtcompress, n, None) is None]
print(light, names, set(vtcompress.__all__) <= set(dir(vtcompress)))
"""
    assert _python(code) == "True [] True"


def test_the_declared_method_names_are_the_registered_built_ins():
    """The command line lists methods from the entry points (no import): every declared name
    registers when looked up, and every built-in method module registers a declared name."""
    import importlib
    import pkgutil
    from importlib.metadata import entry_points

    import vtcompress.methods
    from vtcompress.registry import _METHODS, METHOD_ENTRY_POINTS, get_method

    declared = {ep.name for ep in entry_points(group=METHOD_ENTRY_POINTS)}
    for name in declared:
        assert get_method(name).name == name
    for module in pkgutil.iter_modules(vtcompress.methods.__path__):
        importlib.import_module(f"vtcompress.methods.{module.name}")
    built_in = {
        name for name, spec in _METHODS.items() if spec.config_cls.__module__.startswith("vtcompress.")
    }
    assert built_in == declared
