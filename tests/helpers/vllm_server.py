"""Start ``vllm serve`` (the API server module) for a test module and stop it afterwards."""

from __future__ import annotations

import contextlib
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tests.helpers.vllm_common import vllm_env

STARTUP_S = 600


@contextlib.contextmanager
def start_server(cmd: list[str], port: int, log_dir: Path) -> Iterator[str]:
    """Run ``cmd`` until ``/health`` answers; yields the base URL; the log goes to ``log_dir``."""
    log = (log_dir / "server.log").open("w")
    proc = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, env=vllm_env() | {"VLLM_ENABLE_V1_MULTIPROCESSING": "1"}
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_S
    try:
        while True:
            if proc.poll() is not None:
                raise AssertionError(
                    f"vllm serve exited with {proc.returncode}:\n{Path(log.name).read_text()[-5000:]}"
                )
            try:
                with urllib.request.urlopen(base + "/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"vllm serve not up in {STARTUP_S} s:\n{Path(log.name).read_text()[-5000:]}"
                )
            time.sleep(2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
