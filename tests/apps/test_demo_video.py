"""The demo's video tab: the engine on a clip (the tiny Qwen3-VL; any family that declares video
inputs gets the tab), its report, its one-line problems, and the page's /compare_video endpoint
queried with gradio_client."""

from __future__ import annotations

import re
import socket
from types import SimpleNamespace

import pytest

from tests.conftest import demo_engine
from vtcompress.integrations.demo.engine import DemoEngine, InputError
from vtcompress.integrations.demo.video import video_markdown
from vtcompress.integrations.examples import example
from vtcompress.integrations.llava_next.tiny import build_tiny_llava_next

CLIP = str(example("clip").path)  # 16 frames of 128x96 px


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    from vtcompress.integrations.qwen3_vl.tiny import save_tiny_qwen3_vl

    return demo_engine(save_tiny_qwen3_vl, tmp_path_factory.mktemp("qwen3"))


def test_a_clip_is_answered_twice_with_tokens_per_frame(engine):
    """6 frames: 3 time steps of 24 merged tokens (the clip upscaled to Qwen3-VL's video minimum of
    128 * 32^2 px over all frames, 192x128 px); vidcom2's exact allocation keeps floor(0.25 * 72)."""
    c = engine.compare_video(CLIP, "What happens?", "vidcom2", 0.25, frames=6)
    assert (c.frames_sampled, c.frame_indices, c.frames_in_file) == (6, [0, 3, 6, 9, 12, 15], 16)
    assert [(f.name, f.original) for f in c.frames] == [(f"frame {t}", 24) for t in range(3)]
    assert (c.tokens_before, c.tokens_after) == (72, 18) and sum(f.kept for f in c.frames) == 18
    assert c.uncompressed.prompt_tokens - c.compressed.prompt_tokens == 72 - 18
    assert c.compressed.answer and c.uncompressed.answer and c.flops_after < c.flops_before
    report = video_markdown(c)
    assert "**72 → 18** visual tokens (25.0% kept)" in report
    assert (
        "6 of 16 sampled uniformly (indices 0, 3, 6, 9, 12, 15); the model sees 3 time steps of 2 frames"
        in report
    )
    rows = re.findall(r"^\| (frame \d) \| (\d+) \| (\d+) \|$", report, re.M)
    assert [(name, int(a), int(b)) for name, a, b in rows] == [(f.name, 24, f.kept) for f in c.frames]


def test_ratio_one_gives_the_uncompressed_answer(engine):
    c = engine.compare_video(CLIP, "What happens?", "uniform", 1.0, frames=4)
    assert c.compressed.answer == c.uncompressed.answer and c.tokens_before == c.tokens_after
    assert c.compressed.prompt_tokens == c.uncompressed.prompt_tokens and "switches compression off" in c.note


def test_the_tab_offers_video_methods_first_then_image_methods(engine):
    methods = engine.served_video_methods()
    assert methods[:4] == ["dycoke_ttm", "evs", "vidcom2", "visionzip_video"]
    assert methods[4:] == engine.served_methods() and "uniform" in methods


@pytest.mark.parametrize(
    "video, method, ratio, expected",
    [
        (None, "vidcom2", 0.25, "Please upload a video"),
        ("/no/such.mp4", "vidcom2", 0.25, "no such video file"),
        (CLIP, "vidcom2", 1.5, "Invalid setting"),
        (CLIP, "nosuch", 0.25, "Unknown method 'nosuch'"),
        (CLIP, "globalcom2", 0.25, "globalcom2 cannot run on this model"),
    ],
)
def test_bad_input_gets_a_clear_message(engine, video, method, ratio, expected):
    with pytest.raises(InputError, match=expected):
        engine.compare_video(video, "What happens?", method, ratio, frames=2)


def test_a_family_without_video_inputs_has_no_video_tab():
    model, processor = build_tiny_llava_next(seed=0)
    plain = DemoEngine(model, processor, "tiny", random_weights=True, max_new_tokens=2)
    assert not plain.takes_video and plain.served_video_methods() == []
    with pytest.raises(InputError, match="takes no videos on LLaVA-NeXT"):
        plain.compare_video(CLIP, "What happens?", "vidcom2", 0.25)


# --- the page ----------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def page(engine, tmp_path_factory):
    pytest.importorskip("gradio", reason='the demo page needs: pip install "vtcompress[demo]"')
    client_module = pytest.importorskip("gradio_client", reason='needs: pip install "vtcompress[demo]"')
    from vtcompress.integrations.demo.app import build_app, launch

    app = build_app(engine, examples_dir=tmp_path_factory.mktemp("examples"))
    url = launch(app, host="127.0.0.1", port=free_port(), block=False)
    yield SimpleNamespace(
        client=client_module.Client(url, verbose=False), handle_file=client_module.handle_file
    )
    app.close()


@pytest.mark.slow
def test_the_page_compares_a_clip(page):
    """The default 32 frames take the whole 16-frame clip: 8 time steps of 3 x 4 merged tokens."""
    api = page.client.view_api(print_info=False, return_format="dict")
    assert set(api["named_endpoints"]) == {"/compare", "/compare_video"}
    params = api["named_endpoints"]["/compare_video"]["parameters"]
    assert [p["parameter_name"] for p in params] == ["video", "question", "method", "ratio", "options"]
    message, compressed, full, stats = page.client.predict(
        page.handle_file(CLIP), "What happens?", "vidcom2", 0.25, "", api_name="/compare_video"
    )
    assert message == "**Done.**" and compressed and full
    assert "**96 → 24** visual tokens" in stats
    assert len(re.findall(r"^\| frame \d \| 12 \| \d+ \|$", stats, re.M)) == 8


@pytest.mark.slow
def test_the_page_answers_bad_input_in_the_page(page):
    message, *rest = page.client.predict(
        None, "What happens?", "vidcom2", 0.25, "", api_name="/compare_video"
    )
    assert message.startswith("**Problem:** Please upload a video") and rest == ["", "", ""]
