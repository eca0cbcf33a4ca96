"""``vllm serve`` with the compressed LLaVA-NeXT: OpenAI chat completions with data-URL images,
per-request settings, concurrent requests, and per-request refusals (HTTP 400) of bad input.

The server listens on 127.0.0.1 only, on a free port, and is stopped at the end of the module.
"""

from __future__ import annotations

import asyncio
import base64
import time

import pytest

pytest.importorskip("vllm", reason="vLLM is not installed here: bash .ci/vllm-setup.sh builds .venv-vllm")
openai = pytest.importorskip("openai")

from tests.conftest import IMAGE_SIZES  # noqa: E402
from tests.helpers.vllm_common import ARCH, rule_count  # noqa: E402
from tests.helpers.vllm_server import REQUEST_TIMEOUT_S, data_url, free_port, serve_command, start_server  # noqa: E402
from vtcompress.integrations.vllm.tiny import save_tiny_for_vllm  # noqa: E402

SERVER = {"method": "tokencorr", "ratio": 0.25}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    checkpoint = save_tiny_for_vllm(tmp_path_factory.mktemp("serve") / "tiny-llava-next")
    port = free_port()
    cmd = serve_command(checkpoint, port, {"architectures": [ARCH], "vtcompress": SERVER}, {"image": 1}, 4096)
    with start_server(cmd, port, tmp_path_factory.mktemp("log")) as base:
        yield base, checkpoint


def chat(client, model, url: str, options: dict | None):
    extra = {"mm_processor_kwargs": {"vtcompress": options}} if options is not None else None
    return client.chat.completions.create(
        model=model,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": url}},
                    {"type": "text", "text": "What is it?"},
                ],
            }
        ],
        max_tokens=4,
        temperature=0.0,
        extra_body=extra,
    )


async def run_all(base: str, model: str, jobs: list[tuple[str, dict | None]]):
    client = openai.AsyncOpenAI(
        base_url=base + "/v1", api_key="unused", timeout=REQUEST_TIMEOUT_S, max_retries=0
    )
    try:
        return await asyncio.gather(
            *(chat(client, model, url, opts) for url, opts in jobs), return_exceptions=True
        )
    finally:
        await client.close()


def text_baseline(base: str, model: str) -> int:
    """Prompt tokens besides the image's run, from one uncompressed request."""
    w, h = IMAGE_SIZES["square"]
    (res,) = asyncio.run(run_all(base, model, [(data_url(w, h, 0), {"ratio": 1.0})]))
    assert not isinstance(res, Exception), res
    return res.usage.prompt_tokens - rule_count(w, h, 1.0)


def test_concurrent_requests_get_the_rule_counts_and_bad_ones_are_refused(server):
    base, checkpoint = server
    model = str(checkpoint)
    text = text_baseline(base, model)
    sizes = list(IMAGE_SIZES.values())
    ratios = [None, 1.0, 0.5, 0.25, 0.1]
    methods = ["globalcom2", "fastervlm", "uniform", "random", "tokencorr", "pitome", "tome"]
    good = []
    for i in range(16):
        w, h = sizes[i % len(sizes)]
        ratio = ratios[i % len(ratios)]
        options = None if ratio is None else {"method": methods[i % len(methods)], "ratio": ratio}
        good.append(((w, h), options))
    bad = {
        "not an image": (
            "data:image/png;base64," + base64.b64encode(b"not a picture").decode(),
            {"ratio": 0.5},
        ),
        "ratio": (data_url(500, 300, 1), {"ratio": 1.5}),
        "method": (data_url(500, 300, 2), {"method": "no-such-method"}),
    }
    jobs = [(data_url(w, h, i), opts) for i, ((w, h), opts) in enumerate(good)] + list(bad.values())
    start = time.monotonic()
    results = asyncio.run(run_all(base, model, jobs))
    assert time.monotonic() - start < REQUEST_TIMEOUT_S
    for ((w, h), opts), res in zip(good, results[: len(good)]):
        assert not isinstance(res, Exception), (w, h, opts, res)
        ratio = SERVER["ratio"] if opts is None else opts["ratio"]
        assert res.usage.prompt_tokens == text + rule_count(w, h, ratio), (w, h, opts)
        assert res.choices[0].message.content is not None
    for (name, _), res in zip(bad.items(), results[len(good) :]):
        assert isinstance(res, openai.BadRequestError), (name, res)
        assert res.status_code == 400
        if name != "not an image":
            assert name in str(res), (name, str(res))
    # The server keeps serving after the refusals.
    (after,) = asyncio.run(
        run_all(base, model, [(data_url(672, 672, 3), {"ratio": 0.25, "method": "uniform"})])
    )
    assert not isinstance(after, Exception), after
    assert after.usage.prompt_tokens == text + rule_count(672, 672, 0.25)
