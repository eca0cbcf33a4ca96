"""A pytest plugin: record which tests a collection would skip, and why, then run nothing.

``-p tests.helpers.skip_probe`` with ``VTCOMPRESS_SKIP_PROBE=<file>``: after collection, every
test's skip/skipif marks are evaluated (as pytest evaluates them before running the test) and
every module skipped while being collected (``importorskip`` at module level) is listed; the
result is written to the file as JSON ``{node id: reason}`` and all tests are deselected.
"""

from __future__ import annotations

import json
import os

from _pytest.skipping import evaluate_skip_marks

_skipped_modules: dict[str, str] = {}


def pytest_collectreport(report):
    if report.skipped:
        _skipped_modules[report.nodeid] = (
            str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else ""
        )


def pytest_collection_modifyitems(session, config, items):
    found = dict(_skipped_modules)
    for item in items:
        skip = evaluate_skip_marks(item)
        if skip is not None:
            found[item.nodeid] = skip.reason
    with open(os.environ["VTCOMPRESS_SKIP_PROBE"], "w") as f:
        json.dump({"skips": found, "tests": [item.nodeid for item in items]}, f, indent=1, sort_keys=True)
    config.hook.pytest_deselected(items=list(items))
    items[:] = []
