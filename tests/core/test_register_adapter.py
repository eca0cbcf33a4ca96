"""Registering a host at run time: it is found first, once, for the models it supports.

The run-time list and the finder are private; their names differ between versions of the API
(``_ADAPTERS`` / ``find_adapter``, later ``_HOSTS`` / ``find_host`` with ``register_host`` beside
``register_adapter``), so the test looks both up.
"""

from __future__ import annotations

import pytest
from torch import nn

import vtcompress as vtc
from vtcompress import api


class Toy(nn.Module):
    pass


def _registered_list_name() -> str:
    return "_HOSTS" if hasattr(api, "_HOSTS") else "_ADAPTERS"


def _find(model: nn.Module) -> type:
    return (getattr(api, "find_host", None) or api.find_adapter)(model)


@pytest.mark.parametrize("register", [n for n in ("register_adapter", "register_host") if hasattr(vtc, n)])
def test_a_registered_host_is_found_first_and_registered_once(monkeypatch, register):
    monkeypatch.setattr(api, _registered_list_name(), [])

    class ToyHost:
        model_names = "Toy"

        @classmethod
        def supports(cls, model: nn.Module) -> bool:
            return isinstance(model, Toy)

    assert getattr(vtc, register)(ToyHost) is ToyHost  # usable as a class decorator
    getattr(vtc, register)(ToyHost)
    assert getattr(api, _registered_list_name()) == [ToyHost]
    assert _find(Toy()) is ToyHost
    with pytest.raises(TypeError, match=r"no host for Linear; supported: Toy"):
        _find(nn.Linear(2, 2))
