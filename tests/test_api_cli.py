import pytest

import vtcompress
from tests.conftest import make_image
from vtcompress.cli import main


def test_available_methods_and_configs():
    methods = vtcompress.available_methods()
    assert {"globalcom2", "random", "uniform", "fastervlm"} <= set(methods)
    config = vtcompress.GlobalCom2Config(ratio=0.5)
    assert config.to_dict()["method"] == "globalcom2"
    assert config.replace(ratio=0.1).ratio == 0.1
    with pytest.raises(TypeError, match="number"):
        vtcompress.GlobalCom2Config(ratio="0.5")


def test_compressed_context_restores_the_previous_compression(model):
    outer = vtcompress.compress(model, "uniform", ratio=0.5)
    with vtcompress.compressed(model, "random", ratio=0.25) as inner:
        assert vtcompress.get_handle(model) is inner
    assert vtcompress.get_handle(model) is outer and outer.active
    outer.remove()
    assert vtcompress.get_handle(model) is None


def test_load_compressed_llava_from_a_local_path(tmp_path):
    from vtcompress.integrations.llava_next.tiny import save_tiny_llava_next

    path = save_tiny_llava_next(tmp_path / "tiny")
    model, processor = vtcompress.load_compressed_llava(str(path), method="fastervlm", ratio=0.3)
    handle = vtcompress.get_handle(model)
    assert handle.config.ratio == 0.3 and handle.config.method == "fastervlm"
    with pytest.raises(OSError, match="model='tiny'"):
        vtcompress.load_compressed_llava(str(tmp_path / "missing"))


def test_cli_run_prints_answer_counts_and_times(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("VTCOMPRESS_CACHE", str(tmp_path))
    image = tmp_path / "img.png"
    make_image(640, 400).save(image)
    code = main(
        [
            "run",
            "--image",
            str(image),
            "--question",
            "What is it?",
            "--ratio",
            "0.25",
            "--max-new-tokens",
            "2",
            "--repeats",
            "1",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "RANDOM weights" in out
    assert "visual tokens: 2016 -> 504" in out
    assert "prefill time" in out and "answer:" in out


def test_cli_rejects_bad_input(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["run", "--image", "x.png", "--question", "q", "--ratio", "0"])
    assert "(0, 1]" in capsys.readouterr().err
    bad = tmp_path / "not_an_image.png"
    bad.write_text("hello")
    assert main(["run", "--image", str(bad), "--question", "q"]) == 2
    assert "cannot read image" in capsys.readouterr().err
