import pytest

import vtcompress


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
