"""One progress-bar policy for the loaders, the CLI and the demo: a tiny random model is built and
loaded without transformers' bars; a real checkpoint keeps them; the caller's setting is restored."""

from __future__ import annotations

import pytest
from transformers.utils import logging as hf_logging

import vtcompress as vtc
from vtcompress.integrations.tiny_models import loading_bars, mark_random


@pytest.fixture(autouse=True)
def bars_on():
    hf_logging.enable_progress_bar()
    yield
    hf_logging.enable_progress_bar()


def test_a_tiny_models_bars_are_hidden_a_real_checkpoints_kept(tmp_path):
    real, tiny = tmp_path / "real", tmp_path / "tiny"
    real.mkdir()
    tiny.mkdir()
    mark_random(tiny, "tiny", seed=0)
    with loading_bars(real):
        assert hf_logging.is_progress_bar_enabled()
    with loading_bars(tiny):
        assert not hf_logging.is_progress_bar_enabled()
    assert hf_logging.is_progress_bar_enabled()  # restored
    with loading_bars("llava-hf/llava-v1.6-mistral-7b-hf"):  # a hub id: a real download, bars kept
        assert hf_logging.is_progress_bar_enabled()


def test_the_callers_choice_to_hide_bars_is_kept(tmp_path):
    hf_logging.disable_progress_bar()
    with loading_bars(tmp_path):
        assert not hf_logging.is_progress_bar_enabled()
    assert not hf_logging.is_progress_bar_enabled()


def test_the_python_quick_start_prints_no_bars_for_the_tiny_model(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VTCOMPRESS_CACHE", str(tmp_path))  # built here first, then loaded
    vtc.load_compressed_llava("tiny", method="globalcom2", ratio=0.25)
    err = capsys.readouterr().err
    assert "Writing model shards" not in err and "Loading weights" not in err, err
    assert hf_logging.is_progress_bar_enabled()
