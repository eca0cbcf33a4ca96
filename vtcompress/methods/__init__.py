"""Built-in compression methods. Each module registers itself on import."""

from . import baselines, globalcom2, tokencorr  # noqa: F401
