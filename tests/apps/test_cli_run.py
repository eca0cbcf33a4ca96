"""``vtcompress run``: the no-argument first run, ratio 1.0, and a one-line error (exit 2) for
every bad command line."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import vtcompress
from tests.conftest import make_image
from vtcompress.budget import keep_count
from vtcompress.integrations.cli import main
from vtcompress.integrations.examples import EXAMPLES, example
from vtcompress.integrations.llava_next.layout import AnyResLayout

FAST = ["--max-new-tokens", "2", "--repeats", "2", "--warmup", "0"]


@pytest.fixture(autouse=True)
def tiny_cache(tmp_path_factory, monkeypatch):
    """Every test builds (once) and uses the tiny model in a private cache, offline."""
    from huggingface_hub import constants

    monkeypatch.setenv("VTCOMPRESS_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # read once, at import


def _layout(size):  # (width, height) on the tiny model's grid
    from vtcompress.integrations.llava_next.tiny import PINPOINTS

    return AnyResLayout.for_image((size[1], size[0]), PINPOINTS)


def test_no_arguments_answers_twice_with_counts_times_and_flops(capsys):
    assert main(["run", *FAST]) == 0
    out, err = capsys.readouterr()
    assert "bundled example 'scene'" in out and "What colour is the sun?" in out
    assert "answer without compression: " in out and "answer with compression: " in out
    assert "RANDOM weights" in out
    layout = _layout((640, 480))  # 2x2 crops
    total = layout.num_tokens()
    assert f"globalcom2 at ratio 0.25: {total} -> {keep_count(total, 0.25)}" in out
    view_lines = [line.split() for line in out.splitlines() if line.startswith(("  thumbnail", "  crop"))]
    assert [int(v[-3]) for v in view_lines] == layout.view_counts()
    assert sum(int(v[-1]) for v in view_lines) == keep_count(total, 0.25)
    for stage in ("vision tower", "compressor", "language model", "other", "whole forward"):
        assert f"  {stage} " in out
    assert "2 timed passes of each model" in out
    assert "language model prefill FLOPs (analytic)" in out
    assert "give no idea of the spread" in err  # 2 repeats: says so
    assert "Loading weights" not in err  # the tiny model loads without progress bars


def test_ratio_one_is_off_and_both_answers_agree(capsys):
    assert main(["run", "--ratio", "1.0", "--method", "tokencorr", *FAST]) == 0
    out = capsys.readouterr().out
    total = _layout((640, 480)).num_tokens()
    assert f"compression off (ratio 1.0): every token kept: {total} -> {total}" in out
    answers = [line.split(":", 1)[1] for line in out.splitlines() if line.startswith("answer with")]
    answers += [line.split(":", 1)[1] for line in out.splitlines() if line.startswith("answer without")]
    assert answers[0].strip() == answers[1].strip()
    assert "(1.00x)" in out  # FLOPs unchanged


def test_image_question_and_example_options(tmp_path, capsys):
    path = tmp_path / "wide.png"
    make_image(1000, 500).save(path)
    assert main(["run", "--image", str(path), "--question", "Any shapes?", "--method", "uniform", *FAST]) == 0
    out = capsys.readouterr().out
    assert "1000x500" in out and "question: Any shapes?" in out
    total = _layout((1000, 500)).num_tokens()
    assert f"uniform at ratio 0.25: {total} -> {keep_count(total, 0.25)}" in out
    assert main(["run", "--example", "receipt", *FAST]) == 0
    assert "What is the total on the receipt?" in capsys.readouterr().out


def test_bundled_examples_ship_and_load():
    from vtcompress.integrations.demo.examples import DRAWINGS
    from vtcompress.integrations.inputs import open_image

    assert {n for n, e in EXAMPLES.items() if e.media == "image"} == {"scene", "receipt", "bar_chart"}
    assert EXAMPLES["clip"].media == "video"  # tests/apps/test_cli_video.py
    grids = set()
    for name, draw in DRAWINGS.items():
        image = open_image(example(name).path)
        assert image.mode == "RGB" and image.size == draw().size
        layout = _layout(image.size)
        grids.add((layout.rows, layout.cols))
    assert grids == {(2, 2), (2, 1), (1, 3)}  # three different anyres grids
    # The scene has no text, so its pixels do not depend on the font: the PNG is the drawing.
    assert np.array_equal(np.asarray(open_image(example("scene").path)), np.asarray(DRAWINGS["scene"]()))


def _error(capsys, argv) -> str:
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--model", "/no/such/model"], "no model directory at '/no/such/model'"),
        (["--model", "./relative/missing"], "leave --model out"),
        (["--model", "llava-hf/not-cached-here"], "HF_HUB_OFFLINE is set"),
        (["--device", "nonsense"], "--device nonsense: not a device vtcompress run supports; use cpu"),
        (["--max-new-tokens", "0"], "--max-new-tokens: must be at least 1"),
        (["--repeats", "0"], "--repeats: must be at least 1"),
        (["--warmup", "-1"], "--warmup: must be 0 or more"),
        (["--ratio", "0"], "kept fraction in (0, 1]"),
        (["--ratio", "1.5"], "1.0 switches compression off"),
        (["--ratio", "nan"], "kept fraction in (0, 1]"),
        (["--method", "nope"], "invalid choice: 'nope'"),
        (["--example", "nope"], "invalid choice: 'nope'"),
        (["--question", " "], "--question is empty"),
        (["--image", "/no/such.png"], "--image /no/such.png: no such file; give a PNG"),
        (["--option", "allocation"], "--option: method option 'allocation' is not KEY=VALUE"),
        (["--option", "budget=3"], "globalcom2 has no option 'budget'; its options are:"),
        (["--option", "alpha=high"], "globalcom2 option alpha is a number; got 'high'"),
        (["--option", "allocation=best"], "allocation must be one of 'exact', 'paper'"),
        (["--option", "ratio=0.5"], "give the ratio as --ratio"),
        (["--option", "ratio=abc"], "ratio is not a method option here: give the ratio as --ratio"),
        (["--option", "allocation=best"], "--method globalcom2 --option allocation=best: allocation must be"),
        (["--method", "random", "--option", "seed=1", "--option", "seed=2"], "'seed' given twice"),
    ],
)
def test_bad_command_lines_get_one_line_and_exit_2(capsys, argv, expected):
    assert expected in _error(capsys, ["run", *argv])


def test_options_reach_the_method_and_are_reported(capsys):
    """--option values reach the config in use, which the run reports (only what differs from the
    defaults); the counts still follow the ratio."""
    kept = {}
    for seed in ("0", "7"):
        assert main(["run", "--method", "random", "--option", f"seed={seed}", *FAST]) == 0
        out = capsys.readouterr().out
        assert ("method options: seed=7" in out) == (seed == "7")  # only what differs from the defaults
        kept[seed] = [line for line in out.splitlines() if line.startswith("  crop")]
    assert [line.split("->")[1] for line in kept["0"]] == [line.split("->")[1] for line in kept["7"]]
    assert main(["run", "--option", "allocation=paper", *FAST]) == 0
    assert "method options: allocation='paper'" in capsys.readouterr().out


def test_a_checkpoint_of_another_family_is_one_line(tmp_path, capsys):
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    line = _error(capsys, ["run", "--model", str(tmp_path)])
    assert "model_type 'bert'" in line and "Qwen2.5-VL" in line and "tiny-qwen2.5-vl" in line


def test_bad_images_get_one_line_and_exit_2(tmp_path, capsys):
    text = tmp_path / "not_an_image.png"
    text.write_text("hello")
    assert f"--image {text}: cannot read it as an image" in _error(capsys, ["run", "--image", str(text)])
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (1, 1)).save(tiny)
    line = _error(capsys, ["run", "--image", str(tiny)])
    assert line.startswith(f"vtcompress run: error: --image {tiny}: ") and "too small" in line
    truncated = tmp_path / "truncated.png"
    buffer = tmp_path / "full.png"
    make_image(200, 200).save(buffer)
    truncated.write_bytes(buffer.read_bytes()[:300])
    assert f"--image {truncated}: cannot read it as an image, the file is damaged" in _error(
        capsys, ["run", "--image", str(truncated)]
    )
    assert f"--image {tmp_path}: a directory, not an image file" in _error(
        capsys, ["run", "--image", str(tmp_path)]
    )


def test_cuda_without_cuda_is_one_line(capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    line = _error(capsys, ["run", "--device", "cuda"])
    assert "no CUDA device is usable here" in line and line.endswith("use --device cpu")


def test_unreachable_hub_fails_fast_with_the_fix(capsys, monkeypatch):
    from huggingface_hub import constants

    from vtcompress.integrations import locate as loader

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(loader, "_hub_reachable", lambda: False)
    line = _error(capsys, ["run", "--model", "llava-hf/not-cached-here"])
    assert "cannot reach" in line and "hf download llava-hf/not-cached-here" in line


def test_version_and_python_dash_m():
    done = subprocess.run(
        [sys.executable, "-m", "vtcompress", "--version"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and done.stdout.strip() == f"vtcompress {vtcompress.__version__}"
