"""``vtcompress run --model <Qwen2.5-VL checkpoint>``: both answers, counts by the Qwen2.5-VL rule,
and a one-line refusal (exit 2) for a method its host does not serve."""

from __future__ import annotations

import pytest

from vtcompress.budget import keep_count
from vtcompress.integrations.cli import main
from vtcompress.integrations.examples import DEFAULT_EXAMPLE, example
from vtcompress.integrations.qwen2_5_vl.processing import merged_grid

FAST = ["--max-new-tokens", "2", "--repeats", "2", "--warmup", "0"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from vtcompress.integrations.qwen2_5_vl.tiny import save_tiny_qwen2_5_vl

    return str(save_tiny_qwen2_5_vl(tmp_path_factory.mktemp("qwen") / "tiny-qwen"))


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def test_run_on_a_qwen_checkpoint(checkpoint, capsys):
    assert main(["run", "--model", checkpoint, "--method", "uniform", *FAST]) == 0
    out = capsys.readouterr().out
    from PIL import Image

    width, height = Image.open(example(DEFAULT_EXAMPLE).path).size
    rows, cols = merged_grid((height, width))
    total = rows * cols
    assert f"uniform at ratio 0.25: {total} -> {keep_count(total, 0.25)}" in out
    assert "answer without compression: " in out and "answer with compression: " in out
    assert "RANDOM weights" in out


def test_a_method_the_host_refuses_is_one_line_exit_2(checkpoint, capsys):
    assert main(["run", "--model", checkpoint, "--method", "globalcom2", *FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "--method globalcom2" in err and "global" in err
    served = err.split("this host serves ", 1)[1].split(", ")
    assert {"random", "uniform", "vidcom2"} <= set(served) and "globalcom2" not in served


def test_without_method_the_hosts_default_runs(checkpoint, capsys):
    """globalcom2 (the LLaVA default) needs a thumbnail; Qwen2.5-VL's loader default is uniform."""
    assert main(["run", "--model", checkpoint, *FAST]) == 0
    assert "uniform at ratio 0.25:" in capsys.readouterr().out


def test_merging_by_name_gets_the_hosts_metric(checkpoint, capsys):
    assert main(["run", "--model", checkpoint, "--method", "tome", "--ratio", "0.5", *FAST]) == 0
    out = capsys.readouterr().out
    assert "method options: metric='projected'" in out
    assert "newlines" not in out  # Qwen2.5-VL has no newline tokens: no row for them


def test_an_explicit_option_wins_and_is_refused_naming_the_fix(checkpoint, capsys):
    argv = ["run", "--model", checkpoint, "--method", "pitome", "--option", "metric=vision", *FAST]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "metric='projected'" in err


def test_an_image_too_long_for_the_processor_is_one_line(checkpoint, tmp_path, capsys):
    from PIL import Image

    strip = tmp_path / "strip.png"
    Image.new("RGB", (28, 6000), "white").save(strip)
    assert main(["run", "--model", checkpoint, "--method", "uniform", "--image", str(strip), *FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "214:1; Qwen2.5-VL accepts at most 200:1" in err
    assert err.startswith(f"vtcompress run: error: --image {strip}: ")  # names the file


def test_the_tiny_qwen_name_runs_offline(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VTCOMPRESS_CACHE", str(tmp_path))
    assert main(["run", "--model", "tiny-qwen2.5-vl", "--method", "random", *FAST]) == 0
    out = capsys.readouterr().out
    assert "tiny Qwen2.5-VL has RANDOM weights" in out and "--model Qwen/Qwen2.5-VL-7B-Instruct" in out
    assert (tmp_path / "tiny-qwen2.5-vl-random" / "config.json").exists()  # built in the cache
