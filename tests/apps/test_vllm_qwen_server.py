"""``vllm serve`` with the compressed Qwen2.5-VL: chat completions with data-URL images and
per-request settings; bad settings refused per request with HTTP 400 naming the field, while
the other requests are served."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("vllm", reason="vLLM is not installed here: bash .ci/vllm-setup.sh builds .venv-vllm")
openai = pytest.importorskip("openai")

from tests.apps.test_vllm_server import run_all  # noqa: E402
from tests.helpers.vllm_qwen import ARCH  # noqa: E402
from tests.helpers.vllm_server import data_url, free_port, serve_command, start_server  # noqa: E402
from vtcompress.integrations.vllm.qwen_tiny import save_tiny_qwen_for_vllm  # noqa: E402

pytestmark = pytest.mark.slow

SERVER = {"method": "uniform", "ratio": 0.25}
SIZE = (252, 196)  # 9 x 7 merged tokens


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    checkpoint = save_tiny_qwen_for_vllm("qwen2_5_vl", tmp_path_factory.mktemp("serve") / "tiny-qwen2.5-vl")
    overrides = {"architectures": [ARCH["qwen2_5_vl"]], "vtcompress": SERVER}
    port = free_port()
    cmd = serve_command(checkpoint, port, overrides, {"image": 1}, 4096)
    with start_server(cmd, port, tmp_path_factory.mktemp("log")) as base:
        yield base, str(checkpoint)


def test_requests_get_their_counts_and_bad_settings_get_400(server):
    base, model = server
    w, h = SIZE
    good = [None, {"ratio": 1.0}, {"ratio": 0.5}, {"method": "pitome", "ratio": 0.1}]
    bad = {
        "ratio": {"ratio": 1.5},
        "globalcom2": {"method": "globalcom2"},  # the family cannot serve it
        "videos only": {"method": "evs", "ratio": 0.25},  # a video method on an image
    }
    jobs = [(data_url(w, h, i), opts) for i, opts in enumerate(good + list(bad.values()))]
    results = asyncio.run(run_all(base, model, jobs))
    for opts, res in zip(good, results):
        assert not isinstance(res, Exception), (opts, res)
    lengths = [res.usage.prompt_tokens for res in results[: len(good)]]
    text = lengths[1] - 63
    assert lengths == [text + 15, text + 63, text + 31, text + 6]  # floor(63 r)
    for (name, _), res in zip(bad.items(), results[len(good) :]):
        assert isinstance(res, openai.BadRequestError), (name, res)
        assert res.status_code == 400 and name in str(res) and "mm_processor_kwargs.vtcompress" in str(res)
