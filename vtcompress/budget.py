"""Token budgets: how many tokens a view or an image keeps for a given ratio."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor


def keep_count(n: int, ratio: float) -> int:
    """Tokens kept out of ``n`` at ``ratio``: ``floor(n * ratio)``, at least 1 when n > 0.

    The tiny epsilon keeps float error from turning 0.29 * 100 into 28.
    """
    if n <= 0:
        return 0
    if ratio >= 1.0:
        return n
    return min(n, max(1, math.floor(n * ratio + 1e-9)))


def split_budget(total: int, weights: Sequence[float] | Tensor, caps: Sequence[int] | Tensor) -> list[int]:
    """Split ``total`` tokens across groups in proportion to ``weights``, never above ``caps``.

    Largest-remainder rounding; a capped group's surplus is re-split among the others
    (water filling), so the result sums to ``min(total, sum(caps))`` exactly and depends only on
    the inputs (no randomness, no data besides weights and caps).
    """
    w = torch.as_tensor(weights, dtype=torch.float64).clamp_min(0).tolist()
    cap = [int(c) for c in (caps.tolist() if isinstance(caps, Tensor) else caps)]
    if len(w) != len(cap):
        raise ValueError(f"weights and caps differ in length: {len(w)} vs {len(cap)}")
    total = min(int(total), sum(cap))
    alloc = [0] * len(w)
    open_groups = [i for i in range(len(w)) if cap[i] > 0]
    remaining = total
    while remaining > 0 and open_groups:
        wsum = sum(w[i] for i in open_groups)
        shares = {i: (w[i] / wsum if wsum > 0 else 1 / len(open_groups)) * remaining for i in open_groups}
        # Groups whose share reaches their cap are filled first; the others re-split what is
        # left in the next round, so no rounding is spent on groups that are about to be capped.
        # (An open group holds nothing yet: groups are only filled here or in the last round.)
        full = [i for i in open_groups if shares[i] >= cap[i]]
        if full:
            for i in full:
                alloc[i] = cap[i]
                remaining -= cap[i]
            open_groups = [i for i in open_groups if i not in full]
            continue
        # No cap binds: floors, then the leftover one by one, largest fractional part first
        # (ties: lower index). A share below its cap leaves room for its +1.
        for i in open_groups:
            alloc[i] = math.floor(shares[i])
        left = remaining - sum(math.floor(shares[i]) for i in open_groups)
        order = sorted(open_groups, key=lambda i: (-(shares[i] - math.floor(shares[i])), i))
        for i in order[:left]:
            alloc[i] += 1
        break
    return alloc


def split_budget_rows(weights: Tensor, caps: Tensor, total: int, rounds: int) -> Tensor:
    """:func:`split_budget` of B rows at once, on the weights' device, with the same arithmetic.

    Args:
        weights: [B, n] float64 (negative weights count as 0); caps: long [n] on the same device;
        total: tokens per row (<= caps.sum()); rounds: rounds to run; a round either fills every
            group whose share reaches its cap or is the row's last, so n rounds always suffice.
    Returns:
        long [B, n], row by row what :func:`split_budget` returns, with no read back to the host.
        Each round's weight sum is accumulated left to right as Python's ``sum`` does
        (``cumsum``; a closed group adds an exact 0).
    """
    b, n = weights.shape
    dev = weights.device
    w = weights.clamp_min(0)
    cap = caps.expand(b, n)
    alloc = torch.zeros(b, n, dtype=torch.long, device=dev)
    open_ = cap > 0
    remaining = torch.full((b, 1), total, dtype=torch.long, device=dev)
    done = torch.zeros(b, 1, dtype=torch.bool, device=dev)
    for _ in range(rounds):
        live = ~done & (remaining > 0) & open_.any(1, keepdim=True)
        wsum = w.masked_fill(~open_, 0).cumsum(1)[:, -1:]
        n_open = open_.sum(1, keepdim=True).clamp_min(1)
        shares = (torch.where(wsum > 0, w / wsum, 1 / n_open.double()) * remaining).masked_fill(~open_, 0)
        # Groups whose share reaches their cap are filled; the others wait for the next round.
        full = live & open_ & (shares >= cap)
        alloc = torch.where(full, cap, alloc)
        remaining = remaining - (cap * full).sum(1, keepdim=True)
        open_ = open_ & ~full
        # A live row where no cap binds ends here: floors, then the leftover one token each to the
        # largest fractional parts (ties: lower index).
        last = live & ~full.any(1, keepdim=True)
        floor = shares.floor()
        left = remaining - (floor.long() * open_).sum(1, keepdim=True)
        key = (floor - shares).masked_fill(~open_, float("inf"))
        extra = open_ & (key.argsort(dim=1, stable=True).argsort(dim=1) < left)
        alloc = torch.where(last & open_, floor.long() + extra, alloc)
        done = done | last
    return alloc
