"""visionzip, divprune and downsample: the batched path runs a fixed number of kernels per batch,
whatever its size, and reads nothing back to the host."""

from __future__ import annotations

import argparse

import pytest

from evals.bench.compressors import compress_batch, dispatch_counts, emulated_counts, synthetic_images

METHODS = ["visionzip", "divprune", "downsample"]


def kernels_per_batch(method: str, batch: int, path: str = "batched") -> float:
    config, images, newline = synthetic_images(method, 0.25, batch, (2, 2), 8)
    compress_batch(method, config, images, newline, path)  # plans are built once, then cached
    counts = dispatch_counts(lambda: compress_batch(method, config, images, newline, path), batch)
    assert counts["host_reads_per_image"] == 0
    return counts["kernel_ops_per_image"] * batch


@pytest.mark.parametrize("method", METHODS)
def test_kernels_per_batch_do_not_grow_with_the_batch(method):
    one, eight = kernels_per_batch(method, 1), kernels_per_batch(method, 8)
    assert one == eight
    # at batch 8, at most a sixth of the per-image path's kernels per image
    assert eight / 8 <= kernels_per_batch(method, 1, "per-image") / 6


@pytest.mark.parametrize("method", METHODS)
def test_no_device_syncs(method):
    args = argparse.Namespace(ratio=0.25, batch=4, grid=(2, 2), width=8)
    config, images, _ = synthetic_images(method, 0.25, 4, (2, 2), 8)
    emulated = emulated_counts(method, args, images[0].features.dtype, "batched")
    assert emulated["emulated_syncs_per_image"] == 0  # device -> host copies and data-dependent sizes
