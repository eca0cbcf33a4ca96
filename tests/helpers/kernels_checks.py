"""Shared inputs and equivalence checks for the kernel tests (imported by test_kernels_*.py).

"Equal" for the similarity ops means what the dispatcher promises: scores within floating-point
tolerance of the naive full-matrix reference, and the same top-k indices except where the
reference itself has (near-)tied scores; there any returned index must carry the reported score.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from vtcompress.kernels.reference import naive_cosine_topk, naive_energy_score, naive_redundancy_count

# Half-precision inputs are exact in float32 once loaded, so every path sees the same values; the
# tolerance only covers float32 summation order (a 1e-6 relative error on cosines in [-1, 1]).
ATOL = 2e-5


def tokens(batch: int, n: int, d: int, dtype: torch.dtype = torch.float32, seed: int = 0) -> Tensor:
    """[batch, n, d] random tokens with some near-duplicate rows (so similarities spread out)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(batch, max(1, n // 3), d, generator=g)
    x = base[:, torch.randint(0, base.shape[1], (n,), generator=g)] + 0.7 * torch.randn(
        batch, n, d, generator=g
    )
    return x.to(dtype)


def random_mask(batch: int, n: int, p_keep: float = 0.7, seed: int = 1) -> Tensor:
    """bool [batch, n] with at least one True per row."""
    g = torch.Generator().manual_seed(seed)
    m = torch.rand(batch, n, generator=g) < p_keep
    m[:, 0] = True
    return m


def cosine_matrix(a: Tensor, b: Tensor) -> Tensor:
    """[B, Na, Nb] float64 cosine similarities (the ground truth the float32 paths approximate)."""
    return F.normalize(a.double(), dim=-1) @ F.normalize(b.double(), dim=-1).transpose(1, 2)


def assert_topk_equivalent(
    a: Tensor,
    b: Tensor,
    k: int,
    mask_a: Tensor | None,
    mask_b: Tensor | None,
    scores: Tensor,
    idx: Tensor,
    atol: float = ATOL,
) -> None:
    """``(scores, idx)`` agree with :func:`naive_cosine_topk` up to ties (see module docstring)."""
    ref_s, ref_i = naive_cosine_topk(a, b, k, mask_a, mask_b)
    assert scores.shape == ref_s.shape and idx.shape == ref_i.shape
    assert scores.dtype == torch.float32 and idx.dtype == torch.long
    torch.testing.assert_close(scores, ref_s, atol=atol, rtol=0)  # -inf matches -inf
    assert bool(((idx >= 0) & (idx < b.shape[1])).all()), "index out of range"

    sim = cosine_matrix(a, b)
    if mask_b is not None:
        sim = sim.masked_fill(~mask_b[:, None, :], float("-inf"))
    finite = torch.isfinite(ref_s)
    # Every finite returned index carries its reported score ...
    got = sim.gather(-1, idx)
    torch.testing.assert_close(got[finite], scores[finite].double(), atol=atol, rtol=0)
    # ... appears once per row ...
    for row_i, row_ok in zip(idx.reshape(-1, k), finite.reshape(-1, k)):
        chosen = row_i[row_ok]
        assert chosen.unique().numel() == chosen.numel(), f"duplicate index in {row_i.tolist()}"
    # ... and equals the reference's wherever the reference's choice was not a near-tie.
    order = sim.sort(dim=-1, descending=True).values[..., : k + 1]
    if order.shape[-1] == k:  # k == Nb: nothing beyond the k-th
        order = torch.cat([order, torch.full_like(order[..., :1], float("-inf"))], dim=-1)
    prev_gap = torch.cat(
        [torch.full_like(order[..., :1], float("inf")), order[..., :-2] - order[..., 1:-1]], -1
    )
    next_gap = order[..., :-1] - order[..., 1:]
    clear = finite & (prev_gap > 4 * atol) & (next_gap > 4 * atol)
    assert torch.equal(idx[clear], ref_i[clear]), "indices differ where the reference has no tie"


def assert_energy_equivalent(
    x: Tensor, margin: float, temperature: float, mask: Tensor | None, out: Tensor, atol: float = ATOL
) -> None:
    ref = naive_energy_score(x, margin, temperature, mask)
    assert out.shape == ref.shape and out.dtype == torch.float32
    torch.testing.assert_close(out, ref, atol=atol / temperature, rtol=1e-5)


def assert_redundancy_equivalent(
    x: Tensor, threshold: float, mask: Tensor | None, out: Tensor, atol: float = ATOL
) -> None:
    """Counts equal the reference's, except for pairs whose cosine is within ``atol`` of the threshold."""
    ref = naive_redundancy_count(x, threshold, mask)
    assert out.shape == ref.shape and out.dtype == torch.long
    sim = cosine_matrix(x, x)
    borderline = (sim - threshold).abs() <= atol
    if mask is not None:
        borderline &= mask[:, None, :] & mask[:, :, None]
        assert bool((out[~mask] == 0).all())
    slack = borderline.sum(-1)
    assert bool(((out - ref).abs() <= slack).all()), f"counts differ beyond borderline pairs: {out} vs {ref}"
