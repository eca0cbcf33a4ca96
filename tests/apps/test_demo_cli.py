"""`vtcompress demo`: wiring, messages, and a real server process that shuts down cleanly."""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from vtcompress.integrations.cli import build_parser
from vtcompress.integrations.demo import cli as demo_cli


def test_demo_subcommand_is_wired_into_vtcompress():
    args = build_parser().parse_args(["demo", "--model", "some/model", "--host", "0.0.0.0", "--port", "9999"])
    assert args.func is demo_cli.run
    assert (args.model, args.host, args.port) == ("some/model", "0.0.0.0", 9999)
    defaults = build_parser().parse_args(["demo"])
    assert (defaults.model, defaults.host, defaults.port) == ("tiny", "127.0.0.1", 7860)


def test_without_gradio_the_demo_names_the_extra(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "vtcompress.integrations.demo.app", None)  # import fails
    assert demo_cli.main(["--model", "tiny"]) == 2
    err = capsys.readouterr().err
    assert "needs gradio: pip install -e " in err and '[demo]"' in err  # run from the checkout


def test_a_checkpoint_that_cannot_be_loaded_is_reported(tmp_path, capsys, monkeypatch):
    pytest.importorskip("gradio", reason='gradio is not installed: pip install "vtcompress[demo]"')
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert demo_cli.main(["--model", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"vtcompress demo: error: --model {tmp_path / 'missing'}: ")  # names the input
    assert "could not load a checkpoint" in err and "no model directory" in err and "leave --model out" in err


def test_a_checkpoint_of_another_family_is_one_line(tmp_path, capsys):
    pytest.importorskip("gradio", reason='gradio is not installed: pip install "vtcompress[demo]"')
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    assert demo_cli.main(["--model", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "model_type 'bert'" in err and "tiny-qwen2.5-vl" in err


def test_a_port_in_use_is_reported(tmp_path, capsys, monkeypatch):
    pytest.importorskip("gradio", reason='gradio is not installed: pip install "vtcompress[demo]"')
    from vtcompress.integrations.llava_next.tiny import save_tiny_llava_next

    checkpoint = save_tiny_llava_next(tmp_path / "checkpoint")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert demo_cli.main(["--model", str(checkpoint), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"--port {port}: cannot serve on 127.0.0.1:{port}" in err and "choose a free --port" in err


def _env(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False")
    env["VTCOMPRESS_CACHE"] = str(tmp_path / "cache")
    return env


@pytest.mark.slow
def test_importing_the_demo_does_not_import_gradio(tmp_path):
    code = "import sys, vtcompress.integrations.cli, vtcompress.integrations.demo; print('gradio' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_env(tmp_path), timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


@pytest.mark.slow
def test_server_process_serves_a_checkpoint_path_and_stops_on_sigterm(tmp_path):
    pytest.importorskip("gradio", reason='gradio is not installed: pip install "vtcompress[demo]"')
    from gradio_client import Client, handle_file

    from tests.conftest import make_image
    from vtcompress.integrations.llava_next.tiny import save_tiny_llava_next

    checkpoint = save_tiny_llava_next(tmp_path / "checkpoint")  # a local path, as a user would give
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "server.log"
    cli = "vtcompress.integrations.cli"
    cmd = [sys.executable, "-m", cli, "demo", "--model", str(checkpoint), "--port", str(port)]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=_env(tmp_path))
    try:
        deadline = time.monotonic() + 120
        while f"127.0.0.1:{port}" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.3)
        image = tmp_path / "img.png"
        make_image(500, 300).save(image)
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        message, *_ = client.predict(handle_file(str(image)), "What?", "random", 0.5, api_name="/compare")
        assert "Done" in message
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert "Demo stopped." in text and "Traceback" not in text
    with socket.socket() as s:  # the port is released
        assert s.connect_ex(("127.0.0.1", port)) != 0
