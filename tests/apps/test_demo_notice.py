"""The demo says when it adjusts a value: a ratio typed outside the slider's range is moved to the
nearest end, and the page says so. And the demo accepts the same images as ``vtcompress run``."""

from __future__ import annotations

import os
import shutil
import socket

import pytest
from PIL import Image

pytest.importorskip("gradio", reason="gradio is not installed (the demo extra)")

from vtcompress.integrations.demo.app import RATIO_RANGE, ratio_notice  # noqa: E402
from vtcompress.integrations.demo.engine import DemoEngine, InputError  # noqa: E402
from vtcompress.integrations.inputs import IMAGE_LIMITS  # noqa: E402


def test_notice_for_a_typed_ratio_outside_the_slider():
    low, high = RATIO_RANGE
    assert ratio_notice(0.25) is None and ratio_notice(low) is None and ratio_notice(high) is None
    below = ratio_notice(0.01)
    assert f"set to {low:g}" in below and "0.01 is below it" in below and "--ratio 0.01" in below
    assert "must be above 0" in ratio_notice(0)
    assert "set to 1 (compression off)" in ratio_notice(1.5)
    assert ratio_notice(None) is None and ratio_notice("abc") is None


def test_demo_and_cli_share_the_image_limits(tiny, tmp_path):
    model, processor = tiny
    engine = DemoEngine(model, processor)
    side = IMAGE_LIMITS.min_side
    engine.load_image(Image.new("RGB", (side, side)))  # accepted by both
    with pytest.raises(InputError, match=f"at least {side} px") as err:
        engine.load_image(Image.new("RGB", (side - 1, 200)))
    assert str(err.value) == IMAGE_LIMITS.problem(side - 1, 200)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_browser_shows_the_notice_when_the_slider_clamps(tiny, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    chromium = next(
        (
            p
            for p in (os.environ.get("VTCOMPRESS_CHROMIUM"), shutil.which("chromium"))
            if p and os.path.exists(p)
        ),
        None,
    )
    if chromium is None:
        pytest.skip("Debian's chromium is not installed: apt-get install -y chromium")
    from vtcompress.integrations.demo.app import build_app, launch

    model, processor = tiny
    app = build_app(DemoEngine(model, processor, max_new_tokens=2), examples_dir=tmp_path)
    url = launch(app, host="127.0.0.1", port=_free_port(), block=False)
    try:
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
            try:
                page = browser.new_page()
                page.goto(url)
                box = page.locator("#ratio input[type=number]")
                box.wait_for(timeout=60_000)
                box.fill("0.01")
                box.blur()
                page.wait_for_function(
                    "() => document.querySelector('#message')?.innerText.includes('slider')", timeout=30_000
                )
                assert "set to 0.05" in page.locator("#message").inner_text()
                assert box.input_value() == "0.05"
                assert page.locator(".toast-body").count() == 0  # a notice, not an error
            finally:
                browser.close()
    finally:
        app.close()
