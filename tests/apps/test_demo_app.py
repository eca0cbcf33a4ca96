"""The demo page, served on 127.0.0.1 inside the test run: queried with gradio_client and driven
in headless Chromium (playwright). The browser test keeps a screenshot in artifacts/."""

import os
import re
import shutil
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from tests.conftest import make_image
from vtcompress.budget import keep_count
from vtcompress.integrations.llava_next.layout import AnyResLayout

pytest.importorskip("gradio", reason='gradio is not installed: pip install "vtcompress[demo]"')
client_module = pytest.importorskip(
    "gradio_client", reason='gradio_client is not installed: pip install "vtcompress[demo]"'
)

pytestmark = pytest.mark.slow

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from vtcompress.integrations.demo.app import build_app, launch
    from vtcompress.integrations.demo.engine import DemoEngine
    from vtcompress.integrations.llava_next.tiny import build_tiny_llava_next

    model, processor = build_tiny_llava_next(seed=0)
    engine = DemoEngine(
        model, processor, "tiny LLaVA-NeXT (random weights)", random_weights=True, max_new_tokens=8
    )
    app = build_app(engine, examples_dir=tmp_path_factory.mktemp("examples"))
    url = launch(app, host="127.0.0.1", port=free_port(), block=False)
    files = tmp_path_factory.mktemp("uploads")
    yield SimpleNamespace(url=url, app=app, engine=engine, files=files)
    app.close()


@pytest.fixture(scope="module")
def client(server):
    return client_module.Client(server.url, verbose=False)


def upload(server, image: Image.Image, name: str = "upload.png") -> str:
    path = server.files / name
    image.save(path)
    return client_module.handle_file(str(path))


def counts(stats_markdown: str) -> tuple[int, int]:
    before, after = re.search(r"\*\*(\d+) → (\d+)\*\*", stats_markdown).groups()
    return int(before), int(after)


def test_the_api_names_its_inputs_and_outputs(client):
    """A gradio_client user sees one endpoint, /compare, whose inputs and outputs have names (the
    page's labels), as docs/demo.md lists them."""
    api = client.view_api(print_info=False, return_format="dict")
    assert list(api["named_endpoints"]) == ["/compare"] and not api["unnamed_endpoints"]
    compare = api["named_endpoints"]["/compare"]
    assert [p["parameter_name"] for p in compare["parameters"]] == [
        "image",
        "question",
        "method",
        "ratio",
        "options",
    ]
    assert [r["label"] for r in compare["returns"]] == [
        "Message",
        "Answer with compression",
        "Answer without compression",
        "Token counts, times and FLOPs",
        "Kept tokens per view",
        "Overlay legend",
    ]


def test_page_compares_and_shows_every_view(server, client):
    message, answer_c, answer_u, stats, gallery, legend = client.predict(
        upload(server, make_image(640, 480)), "What is in the image?", "uniform", 0.25, api_name="/compare"
    )
    layout = AnyResLayout.for_config(server.engine.model.config, (480, 640))
    assert "Done" in message
    assert answer_c and answer_u
    assert counts(stats) == (layout.num_tokens(), keep_count(layout.num_tokens(), 0.25))
    assert "FLOPs saved" in stats and "time to first token" in stats
    assert [g["caption"].split(":")[0] for g in gallery] == [
        "thumbnail",
        "crop 0,0",
        "crop 0,1",
        "crop 1,0",
        "crop 1,1",
    ]
    assert gallery[0]["caption"] == f"thumbnail: {keep_count(576, 0.25)} / 576 tokens"
    assert Image.open(gallery[1]["image"]).size == (336, 336)
    assert "kept tokens" in legend


@pytest.mark.parametrize(
    "kind, expected",
    [
        ("no-image", "upload an image"),
        ("text-file", "as an image"),
        ("tiny-image", "too small"),
        ("empty-question", "type a question"),
    ],
)
def test_bad_input_is_answered_in_the_page(server, client, kind, expected):
    image = upload(server, make_image(400, 300))
    question = "What is it?"
    if kind == "no-image":
        image = None
    elif kind == "text-file":
        path = server.files / "notes.png"  # a text file with an image's name
        path.write_text("not an image")
        image = client_module.handle_file(str(path))
    elif kind == "tiny-image":
        image = upload(server, Image.new("RGB", (6, 6)), "tiny.png")
    else:
        question = "  "
    message, answer_c, answer_u, stats, gallery, _ = client.predict(
        image, question, "globalcom2", 0.5, api_name="/compare"
    )
    assert message.startswith("**Problem:**") and expected in message
    assert (answer_c, answer_u, stats, gallery) == ("", "", "", [])


def test_several_users_at_once(server, client):
    image = upload(server, make_image(672, 336))
    ratios = [0.25, 0.5, 0.75, 1.0]
    jobs = [client.submit(image, "What?", "uniform", r, api_name="/compare") for r in ratios]
    results = [job.result(timeout=120) for job in jobs]
    layout = AnyResLayout.for_config(server.engine.model.config, (336, 672))
    before = layout.num_tokens()
    for r, (message, _, _, stats, gallery, _) in zip(ratios, results):
        assert "Done" in message
        assert counts(stats) == (before, keep_count(before, r))
        assert len(gallery) == layout.num_views
    # the uncompressed answer never depends on what ran beside it
    assert len({res[2] for res in results}) == 1
    assert results[-1][1] == results[-1][2]  # ratio 1.0: compression off


def test_header_says_the_tiny_model_is_random(server, client):
    import httpx

    config = httpx.get(server.url + "config", timeout=30).json()
    text = " ".join(str(c.get("props", {}).get("value", "")) for c in config["components"])
    assert "weights are random" in text


def _chromium() -> str | None:
    for path in (os.environ.get("VTCOMPRESS_CHROMIUM"), shutil.which("chromium"), "/usr/bin/chromium"):
        if path and os.path.exists(path):
            return path
    return None


def test_browser_upload_ask_and_see_overlays(server):
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed: pip install playwright"
    )
    chromium = _chromium()
    if chromium is None:
        pytest.skip("Debian's chromium is not installed: apt-get install -y chromium")
    image_path = Path(server.app.vtcompress_examples_dir) / "scene.png"  # 640x480: 2x2 crops
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "demo_page.png"
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(server.url)
            page.wait_for_selector("#submit", timeout=60_000)
            assert "weights are random" in page.locator("#header").inner_text()

            page.locator("#submit").click()  # nothing uploaded yet
            page.wait_for_function(
                "() => document.querySelector('#message')?.innerText.includes('upload an image')",
                timeout=60_000,
            )

            page.locator("#image input[type=file]").set_input_files(str(image_path))
            page.locator("#question textarea").fill("What colour is the sun?")
            page.wait_for_selector("#image img", timeout=30_000)
            page.locator("#submit").click()
            page.wait_for_function(
                "() => document.querySelector('#answer-compressed textarea')?.value.length > 0"
                " && document.querySelector('#message')?.innerText.includes('Done')",
                timeout=60_000,
            )
            page.wait_for_function(
                "() => document.querySelectorAll('#overlays img').length >= 5", timeout=30_000
            )
            page.wait_for_timeout(500)  # let the gallery images paint before the screenshot
            page.screenshot(path=str(shot), full_page=True)
            print(f"screenshot: {shot}")

            assert page.locator("#answer-full textarea").input_value()
            stats = page.locator("#stats").inner_text()
            assert "2304 → 576" in stats and "FLOPs saved" in stats
            assert page.locator("#overlays img").count() == 5
            assert "thumbnail: 144 / 576 tokens" in page.locator("#overlays").inner_text()
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
