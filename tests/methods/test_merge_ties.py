"""Ties in token merging are broken by position, whatever the sort kernel does with equal keys."""

import torch

from vtcompress.merge import pitome_bipartite_plan, tome_plan


def test_tome_merges_the_first_a_tokens_when_every_score_ties():
    # 40 identical tokens: every A token (even position) has a best-partner score of exactly 1.
    # The r = 5 that merge are the first five A tokens; the unmerged A keep position order.
    # (Torch's default CPU sort reorders equal keys from 17 elements on.)
    metric = torch.ones(2, 40, 4)
    plan = tome_plan(metric, r=5)
    assert plan.num_out == 35
    assert plan.keep[:, :15].tolist() == [list(range(10, 40, 2))] * 2
    merged = [i for i in range(0, 40, 2) if i not in plan.keep[0].tolist()]
    assert merged == [0, 2, 4, 6, 8]


def test_pitome_bipartite_keeps_energy_order_on_ties():
    metric = torch.ones(1, 40, 4)
    plan = pitome_bipartite_plan(metric, r=5, margin=0.9)
    # Equal energies keep position order: A = 0, 2, 4, ...; its first five merge.
    assert plan.keep[0, :15].tolist() == list(range(10, 40, 2))
