"""``vtcompress run --model tiny-qwen3-vl`` (or a Qwen3-VL checkpoint): both answers, counts by the
merged-grid rule, the host's default method, and one-line refusals (exit 2)."""

from __future__ import annotations

import pytest

from vtcompress.budget import keep_count
from vtcompress.integrations.cli import main
from vtcompress.integrations.examples import DEFAULT_EXAMPLE, example
from vtcompress.integrations.qwen3_vl.processing import merged_grid

FAST = ["--max-new-tokens", "2", "--repeats", "2", "--warmup", "0"]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("qwen3-cache")


def test_the_tiny_qwen3_vl_name_runs_offline_with_the_hosts_default(cache, monkeypatch, capsys):
    monkeypatch.setenv("VTCOMPRESS_CACHE", str(cache))
    assert main(["run", "--model", "tiny-qwen3-vl", *FAST]) == 0
    out = capsys.readouterr().out
    from PIL import Image

    width, height = Image.open(example(DEFAULT_EXAMPLE).path).size
    rows, cols = merged_grid((height, width))
    assert f"uniform at ratio 0.25: {rows * cols} -> {keep_count(rows * cols, 0.25)}" in out
    assert "tiny Qwen3-VL has RANDOM weights" in out and "--model Qwen/Qwen3-VL-8B-Instruct" in out
    assert (cache / "tiny-qwen3-vl-random" / "config.json").exists()  # built in the cache


def test_merging_by_name_gets_the_hosts_metric(cache, monkeypatch, capsys):
    monkeypatch.setenv("VTCOMPRESS_CACHE", str(cache))
    assert main(["run", "--model", "tiny-qwen3-vl", "--method", "tome", "--ratio", "0.5", *FAST]) == 0
    assert "method options: metric='projected'" in capsys.readouterr().out


def test_a_method_the_host_refuses_is_one_line_exit_2(cache, monkeypatch, capsys):
    monkeypatch.setenv("VTCOMPRESS_CACHE", str(cache))
    assert main(["run", "--model", "tiny-qwen3-vl", "--method", "globalcom2", *FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    served = set(err.split("this host serves ", 1)[1].split(", "))
    assert "--method globalcom2" in err
    assert {"divprune", "downsample", "random", "uniform", "vidcom2", "evs"} <= served
    assert not {"globalcom2", "fastv"} & served


def test_an_image_too_long_for_the_processor_is_one_line(cache, monkeypatch, tmp_path, capsys):
    from PIL import Image

    monkeypatch.setenv("VTCOMPRESS_CACHE", str(cache))
    strip = tmp_path / "strip.png"
    Image.new("RGB", (28, 6000), "white").save(strip)
    assert main(["run", "--model", "tiny-qwen3-vl", "--image", str(strip), *FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "214:1; Qwen3-VL accepts at most 200:1" in err
