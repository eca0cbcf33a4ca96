"""Which host serves which method by name, computed from what each host ``provides`` and what
each method's config ``requirements`` name (with the host's ``name_defaults`` applied, as
:func:`vtcompress.compress` applies them to a method name).

This is the one source of the methods x hosts table: the hosts' refusal messages list it, the
conformance suite runs every served pair, and the README's and the docs' tables are checked
against it (``tests/conformance/docs_tables.py``).
"""

from __future__ import annotations

from typing import Any

from vtcompress.api import host_config
from vtcompress.registry import available_methods

# (score layer, tower depth) a config is asked its requirements with when no model is at hand
# (CLIP ViT-L's). What a built-in method needs does not depend on them, only which layers.
NOMINAL_TOWER = (23, 24)


def missing(host: Any, method: str) -> dict[str, str]:
    """What ``host`` (a host class or instance) lacks to run ``method`` by name: capability -> the
    option that does without it ("" when none); empty when it serves the method."""
    needs = host_config(host, method).requirements(*NOMINAL_TOWER)
    return {need: fix for need, fix in needs.items() if need not in host.provides}


def serves(host: Any, method: str) -> bool:
    """Whether ``vtcompress.compress(model, method)`` runs on ``host``'s models."""
    return not missing(host, method)


def served_methods(host: Any) -> list[str]:
    """The methods ``host`` serves by name, sorted."""
    return [m for m in available_methods() if serves(host, m)]


def served_text(host: Any) -> str:
    """The served methods as a user reads them: those that run as they are first, then those that
    run with the host's defaults, e.g. ``"random, uniform, pitome (metric='projected')"``."""
    defaults = getattr(host, "name_defaults", {})
    methods = served_methods(host)
    plain = [m for m in methods if not defaults.get(m)]
    adapted = [
        f"{m} ({', '.join(f'{k}={v!r}' for k, v in defaults[m].items())})" for m in methods if defaults.get(m)
    ]
    return ", ".join(plain + adapted)
