"""Refuse to run when a folder named ``vtcompress`` hides the installed package.

Run from the parent of a checkout named ``vtcompress`` (a clone's default name), Python imports
that folder as a namespace package: ``vtcompress/__init__.py`` never runs, no method registers,
and the failure surfaces far away (``unknown method 'globalcom2'; known methods:``). The modules
every entry point imports (the config and registry modules) import this one, which checks on
import, so it is one line naming the fix.
"""

from __future__ import annotations

import sys


class ShadowedPackageError(ImportError):
    """``vtcompress`` was imported as a namespace package; ``str(err)`` names the folder and the fix."""


def check_package() -> None:
    """Raise :class:`ShadowedPackageError` when ``vtcompress`` is a namespace package."""
    package = sys.modules.get("vtcompress")
    if package is not None and getattr(package, "__file__", None) is None:
        folders = ", ".join(getattr(package, "__path__", [])) or "?"
        raise ShadowedPackageError(
            f"vtcompress was imported as a namespace package from {folders} (a folder named vtcompress, "
            "e.g. a checkout, in the current directory or on sys.path hides the installed package): run "
            "from another directory or rename that folder"
        )


check_package()
