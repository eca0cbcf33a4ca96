"""Triton kernels on CPU (interpreter) against the torch reference, in a process of their own.

TRITON_INTERPRET=1 has to be set before triton is imported and would send every later CPU call of
this session through the interpreter, so the cases (tests/kernels/kernels_interp_cases.py) run in a child
process; its pytest report is shown on failure.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("triton") is None,
    reason='triton is not installed: pip install "vtcompress[kernels]"',
)


@pytest.mark.slow  # ~20 s: the interpreter runs every kernel program in numpy
def test_triton_kernels_match_reference_in_interpreter():
    cases = Path(__file__).with_name("kernels_interp_cases.py")
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfEs", str(cases)],
        cwd=cases.parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    report = proc.stdout[-6000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, report
    assert " passed" in proc.stdout and "skipped" not in proc.stdout, report
