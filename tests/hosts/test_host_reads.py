"""Compression reads (almost) nothing back from the device: a compressed LLaVA-NeXT forward at
batch 8 makes at most 2 device -> host reads of its own, whatever the method.

On a GPU each read is a synchronisation. On the CPU they are counted where they would happen:
``.item()`` / ``int(t)`` / ``bool(t)`` (``aten._local_scalar_dense``), ``.tolist()``, ``.cpu()``,
``.numpy()``, operations whose output size depends on the data (``nonzero``, ...) and indexing
with a bool mask (a ``nonzero`` inside).
"""

from __future__ import annotations

import traceback
from collections import Counter
from pathlib import Path

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

import vtcompress as vtc
from tests.conformance.hosts import TINY_STAGES
from tests.conftest import make_image

ROOT = Path(__file__).resolve().parents[2]
OURS = (str(ROOT / "vtcompress"), str(ROOT / "integrations"))
TORCH = str(Path(torch.__file__).parent)
DATA_DEPENDENT = {"nonzero", "masked_select", "unique", "_unique2", "unique_consecutive"}
SIZES = [(672, 672), (1000, 500), (300, 900), (500, 300), (300, 700), (672, 672), (1000, 500), (336, 1008)]


class HostReads(TorchDispatchMode):
    """Counts device -> host reads: all of them, and those made by vtcompress's own code."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0
        self.ours: Counter[str] = Counter()

    def hit(self, what: str) -> None:
        self.total += 1
        # The code that asked for the read: the innermost frame outside torch and this module.
        caller = next(
            f for f in reversed(traceback.extract_stack()) if not f.filename.startswith((TORCH, __file__))
        )
        if caller.filename.startswith(OURS):
            self.ours[f"{what} at {Path(caller.filename).name}:{caller.lineno}"] += 1

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name == "_local_scalar_dense" or name in DATA_DEPENDENT:
            self.hit(name)
        elif name in ("index", "index_put", "index_put_") and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1] if i is not None
        ):
            self.hit(f"{name} with a bool mask")
        return func(*args, **(kwargs or {}))


class Reads(TorchFunctionMode):
    """The reads that bypass the dispatcher on CPU tensors."""

    def __init__(self, counter: HostReads) -> None:
        super().__init__()
        self.counter = counter

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in ("tolist", "cpu", "numpy"):
            self.counter.hit(func.__name__)
        return func(*args, **(kwargs or {}))


@torch.no_grad()
def count_reads(model, inputs) -> HostReads:
    model(**inputs)  # warm the plans and caches, as in a running model
    counter = HostReads()
    with Reads(counter), counter:
        model(**inputs)
    return counter


@pytest.fixture(scope="module")
def batch(tiny):
    model, processor = tiny
    images = [make_image(w, h, i) for i, (w, h) in enumerate(SIZES)]
    texts = [f"USER: <image>\nWhat is in picture {i}? ASSISTANT:" for i in range(len(images))]
    return dict(processor(images=images, text=texts, return_tensors="pt", padding=True))


PRE_LM = [m for m in vtc.available_methods("image") if m not in TINY_STAGES]


@pytest.mark.parametrize("method", PRE_LM)
def test_a_compressed_forward_reads_at_most_twice(tiny, batch, method):
    model, _ = tiny
    uncompressed = count_reads(model, batch).total
    with vtc.compressed(model, method, ratio=0.25):
        compressed = count_reads(model, batch)
    assert sum(compressed.ours.values()) <= 2, compressed.ours
    assert compressed.total - uncompressed <= 2, (compressed.total, uncompressed, compressed.ours)


def test_the_counter_sees_each_kind_of_read():
    """The counter is not blind: each kind of read it promises to see counts once."""
    x = torch.arange(6)
    for read in (
        lambda: x.sum().item(),
        lambda: x.tolist(),
        lambda: x.nonzero(),
        lambda: x[x > 2],
        lambda: int(x[0]),
    ):
        counter = HostReads()
        with Reads(counter), counter:
            read()
        assert counter.total == 1


# The in-LM placement (fastv, dart, pyramiddrop) reads once more inside the language model: each
# row's image and text token counts, which every stage then takes from the host (stage sizes,
# DART's pivots, the masked slots), and once for the stats: at batch 8 as at batch 1.
@pytest.mark.parametrize("method, options", TINY_STAGES.items(), ids=list(TINY_STAGES))
def test_a_forward_pruned_inside_the_language_model_reads_three_times(tiny, batch, method, options):
    model, _ = tiny
    uncompressed = count_reads(model, batch).total
    with vtc.compressed(model, method, ratio=0.25, **options):
        compressed = count_reads(model, batch)
    assert sum(compressed.ours.values()) <= 3, compressed.ours
    assert compressed.total - uncompressed <= 3, (compressed.total, uncompressed, compressed.ours)
