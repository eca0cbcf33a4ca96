"""Dispatch between Triton and the torch reference: the switch, the rules, and the public surface."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest
import torch

import vtcompress.kernels as K
from vtcompress.kernels import dispatch, reference


@pytest.fixture(autouse=True)
def _clean_switch(monkeypatch):
    monkeypatch.delenv(K.FORCE_REFERENCE_ENV, raising=False)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    K.set_force_reference(False)
    yield
    K.set_force_reference(False)


def test_public_ops_keep_their_signatures():
    x = torch.randn(2, 9, 6)
    mask = torch.ones(2, 9, dtype=torch.bool)
    s, i = K.cosine_topk(x, x, 2, mask, mask)
    assert s.shape == i.shape == (2, 9, 2)
    assert K.energy_score(x, 0.5, 1.0, mask).shape == (2, 9)
    assert K.redundancy_count(x, 0.5, mask).dtype == torch.long
    assert K.cls_attention_logits(torch.randn(2, 3, 4), torch.randn(2, 7, 3, 4), 0.5).shape == (2, 3, 7)
    assert K.cosine_topk is dispatch.cosine_topk and K.energy_score is dispatch.energy_score


def test_public_ops_equal_reference_on_cpu():
    x = torch.randn(2, 50, 7)
    mask = torch.rand(2, 50) > 0.3
    s, i = K.cosine_topk(x, x, 3, mask, mask, chunk_size=8)
    rs, ri = reference.naive_cosine_topk(x, x, 3, mask, mask)
    torch.testing.assert_close(s, rs, atol=1e-5, rtol=0)
    torch.testing.assert_close(
        K.energy_score(x, 0.5, 0.5, mask, chunk_size=8), reference.naive_energy_score(x, 0.5, 0.5, mask)
    )


def test_cpu_float_inputs_use_reference():
    x = torch.randn(1, 4, 3)
    assert K.backend_for(x) == "reference"
    assert K.backend_for(x, k=1) == "reference"


def test_force_reference_switches(monkeypatch):
    assert not K.reference_forced()
    with K.force_reference():
        assert K.reference_forced()
        with K.force_reference(False):
            assert not K.reference_forced()
        assert K.reference_forced()
    assert not K.reference_forced()

    K.set_force_reference(True)
    assert K.reference_forced()
    with K.force_reference(False):  # the scoped switch wins over the process-wide one
        assert not K.reference_forced()
    K.set_force_reference(False)

    for value, forced in [("1", True), ("true", True), ("0", False), ("", False), ("off", False)]:
        monkeypatch.setenv(K.FORCE_REFERENCE_ENV, value)
        assert K.reference_forced() is forced, value


def test_forced_reference_beats_every_other_rule(monkeypatch):
    # Pretend every tensor may take the Triton path, then check the switch still wins.
    monkeypatch.setattr(dispatch, "_on_triton_device", lambda t: True)
    monkeypatch.setattr(dispatch, "triton_available", lambda: True)
    x = torch.randn(1, 5, 4)
    assert K.backend_for(x) == "triton"
    with K.force_reference():
        assert K.backend_for(x) == "reference"
    monkeypatch.setenv(K.FORCE_REFERENCE_ENV, "1")
    assert K.backend_for(x) == "reference"


def test_rules_that_route_to_reference(monkeypatch):
    monkeypatch.setattr(dispatch, "_on_triton_device", lambda t: True)
    monkeypatch.setattr(dispatch, "triton_available", lambda: True)
    x = torch.randn(1, 5, 4)
    assert K.backend_for(x, k=K.MAX_TOPK) == "triton"
    assert K.backend_for(x, k=K.MAX_TOPK + 1) == "reference"
    assert K.backend_for(x.double()) == "reference"
    for dtype in (torch.bfloat16, torch.float16):
        assert K.backend_for(x.to(dtype)) == "triton"
    w = x.clone().requires_grad_()
    assert K.backend_for(w) == "reference"
    with torch.no_grad():
        assert K.backend_for(w) == "triton"
    monkeypatch.setattr(dispatch, "triton_available", lambda: False)
    with pytest.warns(RuntimeWarning, match=r'pip install -e "[^"]*\[kernels\]"'):  # from the checkout
        dispatch._warn_missing_triton.cache_clear()
        assert K.backend_for(x) == "reference"


def test_triton_failure_falls_back_once_and_loudly(monkeypatch):
    class Broken:
        def energy_score(self, *args, **kwargs):
            raise RuntimeError("no kernel image for this GPU")

    monkeypatch.setattr(dispatch, "_on_triton_device", lambda t: True)
    monkeypatch.setattr(dispatch, "triton_available", lambda: True)
    monkeypatch.setattr(dispatch, "_triton_module", lambda: Broken())
    monkeypatch.setattr(dispatch, "_triton_broken", False)
    x = torch.randn(1, 6, 4)
    with pytest.warns(RuntimeWarning, match="no kernel image"):
        out = K.energy_score(x, 0.5)
    torch.testing.assert_close(out, reference.naive_energy_score(x, 0.5))
    assert K.backend_for(x) == "reference"  # stays on the reference afterwards


def test_triton_available_matches_installation():
    assert K.triton_available() == (importlib.util.find_spec("triton") is not None)


_WITHOUT_TRITON = """
import sys

class NoTriton:  # behave as if the kernels extra were not installed
    def find_spec(self, name, path=None, target=None):
        if name == "triton" or name.startswith("triton."):
            raise ImportError("No module named 'triton'")

sys.meta_path.insert(0, NoTriton())
import torch
import vtcompress
import vtcompress.kernels as K

assert not K.triton_available()
x = torch.randn(1, 5, 3)
assert K.backend_for(x) == "reference"
K.energy_score(x, 0.5)
K.cosine_topk(x, x, 2)
"""


@pytest.mark.slow  # a fresh interpreter imports torch and transformers: ~5-10 s on a 2-core CPU
def test_import_and_ops_work_without_triton():
    subprocess.run(
        [sys.executable, "-c", _WITHOUT_TRITON], check=True, env={"OMP_NUM_THREADS": "1", "PATH": ""}
    )


def test_bad_input_raises_before_dispatch():
    x = torch.randn(2, 10, 4)
    with pytest.raises(ValueError, match="k must be"):
        K.cosine_topk(x, x, 0)
    with pytest.raises(ValueError, match="bool"):
        K.energy_score(x, 0.5, mask=torch.ones(2, 10))
    with pytest.raises(ValueError, match=r"\[B, N, D\]"):
        K.redundancy_count(x[0], 0.5)
