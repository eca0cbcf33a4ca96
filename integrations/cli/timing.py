"""Wall-clock timing of a model's stages with forward hooks, and honest summaries of repeats.

:class:`StageClock` puts a forward pre-hook and a forward hook on each named module (e.g. the
vision tower and the language model) and adds up the seconds spent inside each during a call,
synchronising CUDA at both ends so that queued kernels are counted where they run.
:class:`Timing` summarises repeats as median and range, and says when the range makes a
comparison meaningless.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn


def synchronize(device: torch.device | str) -> None:
    """Wait for queued CUDA kernels on ``device`` (no-op elsewhere)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StageClock:
    """Seconds spent inside each of ``modules`` (name -> module) during the calls it watches.

    A module entered again while already running (recursion) is counted once, from its outer entry.
    """

    def __init__(self, modules: Mapping[str, nn.Module], device: torch.device | str) -> None:
        self.modules = dict(modules)
        self.device = torch.device(device)
        self.seconds = dict.fromkeys(self.modules, 0.0)
        self._started: dict[str, float] = {}
        self._depth = dict.fromkeys(self.modules, 0)

    def _enter(self, name: str):
        def hook(module, args) -> None:
            if self._depth[name] == 0:
                synchronize(self.device)
                self._started[name] = time.perf_counter()
            self._depth[name] += 1

        return hook

    def _leave(self, name: str):
        def hook(module, args, output) -> None:
            self._depth[name] -= 1
            if self._depth[name] == 0:
                synchronize(self.device)
                self.seconds[name] += time.perf_counter() - self._started.pop(name)

        return hook

    @contextmanager
    def watching(self) -> Iterator[StageClock]:
        """Hooks on for the ``with`` block; ``seconds`` restarts from zero."""
        self.seconds = dict.fromkeys(self.modules, 0.0)
        self._depth = dict.fromkeys(self.modules, 0)
        handles = []
        try:
            for name, module in self.modules.items():
                handles.append(module.register_forward_pre_hook(self._enter(name)))
                handles.append(module.register_forward_hook(self._leave(name)))
            yield self
        finally:
            for h in handles:
                h.remove()


@dataclass
class Timing:
    """Repeated measurements (seconds) of one quantity."""

    samples: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def low(self) -> float:
        return min(self.samples)

    @property
    def high(self) -> float:
        return max(self.samples)

    @property
    def spread(self) -> float:
        """(max - min) / median: 0.1 means the repeats lie within 10% of the median's size."""
        return (self.high - self.low) / self.median if self.median > 0 else 0.0

    def overlaps(self, other: Timing) -> bool:
        """True when the two ranges overlap: their difference is not resolved by these repeats."""
        return self.low <= other.high and other.low <= self.high

    def format_ms(self) -> str:
        return f"{self.median * 1e3:.2f} [{self.low * 1e3:.2f}-{self.high * 1e3:.2f}]"
