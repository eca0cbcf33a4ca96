"""The llava package host is declared in every venv, and loading it imports neither ``llava`` nor
a transformers symbol (it runs beside transformers 4.x and 5.x alike)."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points

from vtcompress.integrations.llava_pkg.host import LlavaPackageHost


def test_entry_point_names_the_host():
    hosts = {ep.name: ep for ep in entry_points(group="vtcompress.hosts")}
    assert hosts["llava_pkg"].load().host_class() is LlavaPackageHost


def test_loading_the_host_imports_no_llava_and_no_transformers():
    code = (
        "import sys; import vtcompress.integrations.llava_pkg.host; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('llava', 'transformers')]; "
        "assert not bad, bad"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_supports_no_other_model():
    import torch

    assert not LlavaPackageHost.supports(torch.nn.Linear(2, 2))
    fake = type("LlavaLlamaForCausalLM", (torch.nn.Module,), {})()  # same name, another package
    assert not LlavaPackageHost.supports(fake)
