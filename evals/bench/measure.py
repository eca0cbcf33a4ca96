"""One measured ``generate`` call: stage times from forward hooks, stage memory peaks, token counts.

Stages (hooks on the stock modules, so the uncompressed model is timed by the same code):
* vision: the CLIP tower plus the projector;
* compress: ``handle.last_stats.compress_seconds`` (the method and the packing of its output);
* prefill: the decoder (``language_model``) on the whole prompt, LM head excluded;
* decode: each later call of the outer model (one new token for the batch), LM head included.
Memory: on CUDA ``max_memory_allocated``; on CPU the process's peak resident size (VmHWM, reset
through /proc/self/clear_refs). A stage's peak is given above the memory in use when it starts,
so it is what that stage itself adds, whatever earlier stages left alive.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PeakMemory:
    """Peak memory of segments of work: ``start()``, work, ``stop()`` -> (peak, extra) bytes.

    ``begin_run()`` / ``end_run()`` around a whole call give its overall peak, segments included.
    On CPU it needs a Linux /proc whose peak RSS can be reset; ``available`` is False otherwise.
    Segments may not nest (the peak counter is global).
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.available = device.type == "cuda" or self._cpu_reset()
        self._base = 0
        self.overall = 0

    def _reset(self) -> None:
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self._cpu_reset()

    def _peak(self) -> int:
        if self.device.type == "cuda":
            synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device)
        return self._status_kib("VmHWM") * 1024

    def begin_run(self) -> None:
        if self.available:
            self._reset()
        self.overall = 0

    def end_run(self) -> int:
        """Overall peak (bytes) since ``begin_run``."""
        if self.available:
            self.overall = max(self.overall, self._peak())
        return self.overall

    def _cpu_reset(self) -> bool:
        try:
            _CLEAR_REFS.write_text("5")  # "5" resets VmHWM to the current RSS
            return True
        except OSError:
            return False

    @staticmethod
    def _status_kib(key: str) -> int:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        raise KeyError(key)

    def current(self) -> int:
        if self.device.type == "cuda":
            return torch.cuda.memory_allocated(self.device)
        return self._status_kib("VmRSS") * 1024 if self.available else 0

    def start(self) -> None:
        if not self.available:
            return
        self.overall = max(self.overall, self._peak())  # fold in what ran since the last reset
        self._reset()
        self._base = self.current()

    def stop(self) -> tuple[int, int]:
        """(absolute peak, peak above the memory in use at ``start``), bytes; (0, 0) if unavailable."""
        if not self.available:
            return 0, 0
        peak = self._peak()
        self.overall = max(self.overall, peak)
        return peak, max(peak - self._base, 0)


@dataclass
class StageRecord:
    """Calls of one stage: wall and process-CPU seconds, sequence length (decoder stages)."""

    seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    peak: int = 0
    extra: int = 0


STAGES = ("vision", "projector", "pack", "decoder", "step")


class StageClock:
    """Times the stages of a LLaVA-NeXT model with hooks; ``remove()`` (or ``with``) undoes them.

    vision / projector / decoder / step: forward hooks on the CLIP tower, the projector, the
    language model and the outer model. pack: a wrapper around ``pack_image_features`` -- stock
    packing for the uncompressed model; with vtcompress attached, the method, its packing and
    the adapter's per-image bookkeeping. Each call gets wall time (``perf_counter``) and process
    CPU time (``process_time``: on a shared CPU with one torch thread, the compute the call took,
    whatever else the machine runs). Memory peaks: around the first vision call and the prefill.
    """

    def __init__(self, model: nn.Module, memory: PeakMemory) -> None:
        self.device = next(model.parameters()).device
        self.memory = memory
        self.stages = {name: StageRecord() for name in STAGES}
        self._starts: dict[str, tuple[float, float]] = {}
        self._memory_stage: str | None = None
        self.inner = inner = model.model
        self._handles = []
        for name, module in (
            ("vision", inner.vision_tower),
            ("projector", inner.multi_modal_projector),
            ("decoder", inner.language_model),
            ("step", model),
        ):
            self._handles.append(module.register_forward_pre_hook(self._pre(name), with_kwargs=True))
            self._handles.append(module.register_forward_hook(self._post(name)))
        # pack_image_features is a method, not a module: wrap whatever is installed (stock or adapter).
        self._pack_was_patched = "pack_image_features" in inner.__dict__
        self._pack = inner.pack_image_features

        def pack_image_features(*args, **kwargs):
            self._begin("pack", 0)
            try:
                return self._pack(*args, **kwargs)
            finally:
                self._end("pack")

        inner.pack_image_features = pack_image_features

    @staticmethod
    def _length(args: tuple, kwargs: dict[str, Any]) -> int:
        for key in ("inputs_embeds", "input_ids"):
            value = kwargs.get(key)
            if isinstance(value, torch.Tensor):
                return int(value.shape[1])
        for value in args:
            if isinstance(value, torch.Tensor) and value.dim() >= 2:
                return int(value.shape[1])
        return 0

    def _begin(self, name: str, length: int) -> None:
        record = self.stages[name]
        record.lengths.append(length)
        # The first vision call and the prefill (the first multi-token decoder call) get memory peaks.
        if self._memory_stage is None and (
            (name == "vision" and not record.seconds) or (name == "decoder" and length > 1)
        ):
            self._memory_stage = name
            self.memory.start()
        synchronize(self.device)
        self._starts[name] = (time.perf_counter(), time.process_time())

    def _end(self, name: str) -> None:
        synchronize(self.device)
        wall, cpu = self._starts.pop(name)
        record = self.stages[name]
        record.seconds.append(time.perf_counter() - wall)
        record.cpu_seconds.append(time.process_time() - cpu)
        if self._memory_stage == name:
            record.peak, record.extra = self.memory.stop()
            self._memory_stage = None

    def _pre(self, name: str):
        def hook(module, args, kwargs):
            self._begin(name, self._length(args, kwargs))

        return hook

    def _post(self, name: str):
        def hook(module, args, output):
            self._end(name)

        return hook

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        if self._pack is not None:
            if self._pack_was_patched:
                self.inner.pack_image_features = self._pack
            else:
                del self.inner.pack_image_features
            self._pack = None

    def __enter__(self) -> StageClock:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()

    # --- summaries -------------------------------------------------------------------------
    def _values(self, name: str, cpu: bool) -> list[float]:
        record = self.stages[name]
        return record.cpu_seconds if cpu else record.seconds

    def total(self, name: str, cpu: bool = False) -> float:
        return sum(self._values(name, cpu))

    def vision_seconds(self, cpu: bool = False) -> float:
        """CLIP tower + projector."""
        return self.total("vision", cpu) + self.total("projector", cpu)

    def prefill_seconds(self, cpu: bool = False) -> float:
        """Decoder time of the calls that processed more than one token (the prefill)."""
        d = self.stages["decoder"]
        return sum(t for t, n in zip(self._values("decoder", cpu), d.lengths) if n > 1)

    def decode_seconds_per_token(self, cpu: bool = False) -> float:
        """Median time of the one-token outer steps (decoder + LM head + step overhead)."""
        s = self.stages["step"]
        steps = [t for t, n in zip(self._values("step", cpu), s.lengths) if n == 1]
        return statistics.median(steps) if steps else math.nan
