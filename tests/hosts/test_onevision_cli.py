"""``vtcompress run --model <a LLaVA-OneVision checkpoint>``: counts by OneVision's rule, and a
method the host cannot serve refused in one line (exit 2)."""

from __future__ import annotations

import pytest

from vtcompress.budget import keep_count
from vtcompress.integrations.cli import main
from vtcompress.integrations.llava_onevision.layout import OneVisionLayout

FAST = ["--max-new-tokens", "2", "--repeats", "2", "--warmup", "0"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from vtcompress.integrations.llava_onevision.tiny import save_tiny_onevision

    return str(save_tiny_onevision(tmp_path_factory.mktemp("onevision") / "tiny"))


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def test_run_on_a_onevision_checkpoint_counts_by_its_rule(checkpoint, capsys):
    assert main(["run", "--model", checkpoint, *FAST]) == 0
    out = capsys.readouterr().out
    layout = OneVisionLayout.for_image((480, 640))  # the bundled example 'scene'
    total = layout.num_tokens()
    assert f"globalcom2 at ratio 0.25: {total} -> {keep_count(total, 0.25)}" in out
    view_lines = [line.split() for line in out.splitlines() if line.startswith(("  thumbnail", "  crop"))]
    assert [int(v[-3]) for v in view_lines] == layout.view_counts()
    assert f"newlines      {layout.num_newlines()} ->    {layout.num_newlines()}" in out


def test_a_method_needing_cls_is_one_line_and_exit_2(checkpoint, capsys):
    assert main(["run", "--model", checkpoint, "--method", "tokencorr", *FAST]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not provide" in err[0] and "SigLIP has no [CLS]" in err[0]
