"""Samples the model could not process, and the exit code of an lmms-eval run that had any.

lmms-eval catches every exception of an evaluation, logs it and exits 0, and a sample whose
answer is empty just scores 0. So the model keeps its own tally here (one per process), and
when the process was started by the ``lmms-eval`` command it says at exit how many samples
failed and, if any did (or the run stopped on an error), ends the process with exit code 1.
That is an ``atexit`` handler calling ``os._exit`` after flushing output: the one place left
to set the exit code once lmms-eval's own ``sys.exit(0)`` has run.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Any

ON_ERROR = ("skip", "raise")
EXIT_CODE = 1


@dataclass
class FailureTally:
    """Samples seen and failed in this process; ``stopped``: the error that ended the run."""

    samples: int = 0
    failed: list[dict[str, Any]] = field(default_factory=list)
    stopped: str | None = None

    def summary(self) -> str:
        line = f"vtcompress: {len(self.failed)} of {self.samples} samples failed"
        if self.failed:
            first = self.failed[0]
            line += (
                f" (first: task {first['task']!r}, doc {first['doc_id']}: {first['error']}); each failed "
                "sample is logged with its error under token_counts.vtcompress (--log_samples)"
            )
        if self.stopped:
            line += f"; the run stopped on an error (on_error=raise): {self.stopped}"
        return line

    @property
    def exit_code(self) -> int:
        return EXIT_CODE if self.failed or self.stopped else 0


TALLY = FailureTally()
_installed = False


def launched_by_lmms_eval() -> bool:
    """True in a process started as ``lmms-eval ...`` or ``python -m lmms_eval ...``."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and (spec.name or "").startswith("lmms_eval"):
        return True
    return os.path.basename(sys.argv[0] if sys.argv else "") in ("lmms-eval", "lmms_eval")


def report_at_exit() -> None:
    """Say how many samples failed; exit with EXIT_CODE if any did (or the run stopped)."""
    if TALLY.samples == 0 and not TALLY.stopped:
        return
    print(TALLY.summary(), file=sys.stderr, flush=True)
    code = TALLY.exit_code
    if code:
        sys.stdout.flush()
        sys.stderr.flush()
        logging.shutdown()
        os._exit(code)


def install_exit_report() -> None:
    """Register :func:`report_at_exit` once, in processes started by the lmms-eval command."""
    global _installed
    if not _installed and launched_by_lmms_eval():
        atexit.register(report_at_exit)
        _installed = True
