"""Budget rules users rely on: how many tokens an image keeps and how a total splits across views."""

import pytest
import torch

from vtcompress.budget import keep_count, split_budget


@pytest.mark.parametrize(
    ("n", "ratio", "kept"),
    [
        (576, 0.25, 144),
        (10, 0.35, 3),  # floor, not round
        (5, 0.999, 4),
        (100, 0.29, 29),  # 0.29 * 100 is 28.999... in floating point
        (1000, 0.07, 70),  # 0.07 * 1000 is 70.00000000000001: the floor stays 70
        (3, 0.1, 1),  # a non-empty view never drops to zero
        (1, 0.5, 1),
        (7, 1.0, 7),
        (7, 1.5, 7),  # never more than n
        (0, 0.5, 0),
        (-3, 0.5, 0),
    ],
)
def test_keep_count_is_floor_of_n_times_ratio_and_at_least_one(n, ratio, kept):
    assert keep_count(n, ratio) == kept


@pytest.mark.parametrize(
    ("total", "weights", "caps", "alloc"),
    [
        (12, [1, 2, 3], [100, 100, 100], [2, 4, 6]),  # exact proportions
        (7, [0.15, 0.25, 0.6], [10, 10, 10], [1, 2, 4]),  # shares 1.05, 1.75, 4.2: largest remainder
        (10, [1, 1, 1], [10, 10, 10], [4, 3, 3]),  # tie of remainders: the lower index first
        (6, [1, 1, 1, 1], [9, 9, 9, 9], [2, 2, 1, 1]),  # two leftovers, four-way tie
        (10, [3, 1], [10, 10], [8, 2]),  # 7.5 : 2.5, tie of fractions -> index 0
        (10, [1, 3], [10, 10], [3, 7]),  # the same tie: index 0 again, even though it is lighter
        (5, [0, 0, 0], [10, 10, 10], [2, 2, 1]),  # no weight at all: an even split
        (4, [-1, 1], [10, 10], [0, 4]),  # negative weights count as zero
        (5, [1, 1], [0, 10], [0, 5]),  # a zero cap takes nothing
        (1000, [1, 2], [3, 4], [3, 4]),  # more than the caps: every group full
        (0, [1, 2], [3, 4], [0, 0]),
    ],
)
def test_split_budget_examples(total, weights, caps, alloc):
    assert split_budget(total, weights, caps) == alloc
    # Tensors behave like lists.
    assert split_budget(total, torch.tensor(weights, dtype=torch.float32), torch.tensor(caps)) == alloc


def test_a_capped_groups_surplus_is_re_split_among_the_others():
    # 10 over three equal groups; group 0 holds 1, the 9 left split 4.5 : 4.5 -> 5 : 4 (tie, lower index)
    assert split_budget(10, [1, 1, 1], [1, 100, 100]) == [1, 5, 4]
    # Group 0 would get 20 of 30 but holds 5: the other 25 go to group 1 up to its cap, then group 2.
    assert split_budget(30, [4, 1, 1], [5, 12, 100]) == [5, 12, 13]
    # Surplus follows the weights of the groups still open.
    assert split_budget(40, [10, 1, 3], [4, 100, 100]) == [4, 9, 27]


def test_split_budget_sums_to_the_total_within_caps_and_favours_heavier_groups():
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        n = int(torch.randint(1, 8, (1,), generator=gen))
        caps = torch.randint(0, 50, (n,), generator=gen).tolist()
        weights = torch.rand(n, generator=gen).tolist()
        total = int(torch.randint(0, 200, (1,), generator=gen))
        alloc = split_budget(total, weights, caps)
        assert sum(alloc) == min(total, sum(caps))
        assert all(0 <= a <= c for a, c in zip(alloc, caps))
        # Uncapped groups: a heavier group never gets fewer tokens; each is within one token of
        # its proportional share of what the uncapped groups got.
        free = [i for i in range(n) if alloc[i] < caps[i]]
        got = sum(alloc[i] for i in free)
        wsum = sum(weights[i] for i in free)
        for i in free:
            for j in free:
                if weights[i] > weights[j]:
                    assert alloc[i] >= alloc[j], (weights, caps, total, alloc)
            if wsum > 0:
                assert abs(alloc[i] - got * weights[i] / wsum) < 1 + 1e-9, (weights, caps, total, alloc)


def test_split_budget_weighs_in_double_precision():
    # Weights 1 and 1 + 1e-9 are equal in float32; the heavier one must still win the last token.
    assert split_budget(1, [1.0, 1.0 + 1e-9], [5, 5]) == [0, 1]
    assert split_budget(1, torch.tensor([1.0, 1.0 + 1e-9], dtype=torch.float64), [5, 5]) == [0, 1]


def test_split_budget_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="differ in length"):
        split_budget(3, [1, 2], [3])
