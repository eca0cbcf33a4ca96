"""The ``vtcompress`` command (``vtcompress run``, ``vtcompress demo``): an application on top of
the hosts, like the demo and the lmms-eval models. ``python -m vtcompress.integrations.cli``
runs it too.
"""

from vtcompress.integrations.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
