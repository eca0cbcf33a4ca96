"""``vtc.register_adapter``: a host registered at run time is found first, once, for the models it supports."""

from __future__ import annotations

import pytest
from torch import nn

import vtcompress as vtc
from vtcompress import api


class Toy(nn.Module):
    pass


def test_a_registered_host_is_found_first_and_registered_once(monkeypatch):
    monkeypatch.setattr(api, "_ADAPTERS", [])

    class ToyHost:
        model_names = "Toy"

        @classmethod
        def supports(cls, model: nn.Module) -> bool:
            return isinstance(model, Toy)

    assert vtc.register_adapter(ToyHost) is ToyHost  # usable as a class decorator
    vtc.register_adapter(ToyHost)
    assert api._ADAPTERS == [ToyHost]
    assert api.find_adapter(Toy()) is ToyHost
    with pytest.raises(TypeError, match="no host for Linear; supported: Toy"):
        api.find_adapter(nn.Linear(2, 2))
