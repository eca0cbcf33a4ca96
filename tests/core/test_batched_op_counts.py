"""The batched path costs a fixed number of operations per batch and reads nothing back to the host."""

from __future__ import annotations

import argparse

import pytest

from evals.bench.compressors import (
    OpCounter,
    compress_batch,
    dispatch_counts,
    emulated_counts,
    synthetic_images,
)

BATCHED = ["uniform", "random", "fastervlm", "globalcom2", "tokencorr", "tome", "pitome"]
MERGING = ["tome", "pitome"]
# aten operations per image at batch 8 the batched path must stay within (tokencorr: the torch
# reference of its similarity count runs in row blocks, about 60 operations per batch)
BUDGET = {"tokencorr": 32}


def ops_per_batch(method: str, batch: int, path: str = "batched") -> int:
    config, images, newline = synthetic_images(method, 0.25, batch, (2, 2), 8)
    compress_batch(method, config, images, newline, path)  # plans are built once, then cached
    with OpCounter() as counter:
        compress_batch(method, config, images, newline, path)
    return sum(counter.ops.values())


@pytest.mark.parametrize("method", BATCHED)
def test_ops_per_batch_do_not_grow_with_the_batch(method):
    one, eight = ops_per_batch(method, 1), ops_per_batch(method, 8)
    assert one == eight
    if method in MERGING:  # the target: at most a tenth of the per-image path's operations
        assert eight / 8 <= ops_per_batch(method, 1, "per-image") / 10
    else:  # the target: at most 12 per image at batch 8
        assert eight <= BUDGET.get(method, 12) * 8


@pytest.mark.parametrize("method", BATCHED)
def test_no_host_reads_in_exact_mode(method):
    config, images, newline = synthetic_images(method, 0.25, 4, (2, 2), 8)
    compress_batch(method, config, images, newline, "batched")
    counts = dispatch_counts(lambda: compress_batch(method, config, images, newline, "batched"), 4)
    assert counts["host_reads_per_image"] == 0  # .item(), .tolist(), int(tensor)
    args = argparse.Namespace(ratio=0.25, batch=4, grid=(2, 2), width=8)
    emulated = emulated_counts(method, args, images[0].features.dtype, "batched")
    assert emulated["emulated_syncs_per_image"] == 0  # device -> host copies and data-dependent sizes


def test_per_image_path_is_counted_as_before():
    """The reference path still reads scores back (what the batched path removes)."""
    config, images, newline = synthetic_images("globalcom2", 0.25, 2, (2, 2), 8)
    args = argparse.Namespace(ratio=0.25, batch=2, grid=(2, 2), width=8)
    assert (
        emulated_counts("globalcom2", args, images[0].features.dtype, "per-image")["emulated_syncs_per_image"]
        >= 1
    )
