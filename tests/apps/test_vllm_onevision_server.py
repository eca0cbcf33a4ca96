"""``vllm serve`` with the compressed LLaVA-OneVision: chat completions with data-URL images get the
rule's prompt length per request setting, and bad requests are answered with HTTP 400 naming the
field while the server keeps serving. (Clips are checked offline: tests/apps/test_vllm_onevision.py.)
"""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("vllm", reason="vLLM is not installed here: bash .ci/vllm-setup.sh builds .venv-vllm")
openai = pytest.importorskip("openai")

from tests.helpers.vllm_onevision import ARCH  # noqa: E402
from tests.helpers.vllm_server import REQUEST_TIMEOUT_S, data_url, free_port, serve_command, start_server  # noqa: E402
from vtcompress.budget import keep_count  # noqa: E402
from vtcompress.integrations.llava_onevision.layout import OneVisionLayout  # noqa: E402
from vtcompress.integrations.vllm.onevision_tiny import save_tiny_onevision_for_vllm  # noqa: E402

pytestmark = pytest.mark.slow

SERVER = {"method": "globalcom2", "ratio": 0.25}
SIZE = (500, 300)  # (w, h)


def rule_count(ratio: float) -> int:
    layout = OneVisionLayout.for_image(SIZE[::-1])
    return keep_count(layout.num_tokens(), ratio) + layout.num_newlines("unpadded")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    checkpoint = save_tiny_onevision_for_vllm(tmp_path_factory.mktemp("serve") / "tiny-llava-onevision")
    port = free_port()
    overrides = {"architectures": [ARCH], "vtcompress": SERVER}
    cmd = serve_command(checkpoint, port, overrides, {"image": 1, "video": 1}, 8192)
    with start_server(cmd, port, tmp_path_factory.mktemp("log")) as base:
        yield base, str(checkpoint)


async def ask_all(base: str, model: str, options: list[dict | None]):
    client = openai.AsyncOpenAI(
        base_url=base + "/v1", api_key="unused", timeout=REQUEST_TIMEOUT_S, max_retries=0
    )

    async def ask(i: int, opts: dict | None):
        content = [
            {"type": "image_url", "image_url": {"url": data_url(*SIZE, seed=i)}},
            {"type": "text", "text": "What is it?"},
        ]
        extra = {"mm_processor_kwargs": {"vtcompress": opts}} if opts is not None else None
        return await client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": content}],
            max_tokens=4,
            temperature=0.0,
            extra_body=extra,
        )

    try:
        return await asyncio.gather(*(ask(i, o) for i, o in enumerate(options)), return_exceptions=True)
    finally:
        await client.close()


GOOD = [{"ratio": 1.0}, None, {"method": "uniform", "ratio": 0.1}, {"method": "pitome", "ratio": 0.5}]
BAD = {
    "ratio": {"ratio": 1.5},
    "no-such-method": {"method": "no-such-method"},
    "[CLS]": {"method": "fastervlm"},
    "videos only": {"method": "vidcom2"},
}


def test_requests_get_their_counts_and_bad_ones_a_400_naming_the_field(server):
    base, model = server
    results = asyncio.run(ask_all(base, model, GOOD + list(BAD.values())))
    good, bad = results[: len(GOOD)], results[len(GOOD) :]
    for res in good:
        assert not isinstance(res, Exception), res
    text = good[0].usage.prompt_tokens - rule_count(1.0)  # the prompt's text tokens
    for opts, res in zip(GOOD, good):
        ratio = SERVER["ratio"] if opts is None else opts["ratio"]
        assert res.usage.prompt_tokens == text + rule_count(ratio), opts
    for (word, opts), res in zip(BAD.items(), bad):
        assert isinstance(res, openai.BadRequestError), (opts, res)
        assert res.status_code == 400
        assert "mm_processor_kwargs.vtcompress" in str(res) and word in str(res), str(res)
    (after,) = asyncio.run(ask_all(base, model, [{"ratio": 0.25}]))  # still serving
    assert not isinstance(after, Exception), after
    assert after.usage.prompt_tokens == text + rule_count(0.25)
