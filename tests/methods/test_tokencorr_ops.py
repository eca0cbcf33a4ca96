"""tokencorr's pure steps against brute force: density, IQR, sampling, budgets, group pooling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests.helpers.tokencorr import clustered_qk, random_qk
from vtcompress.methods.tokencorr_ops import (
    adaptive_budgets,
    cls_patch_probs,
    exact_budgets,
    information_density,
    iqr_outliers,
    patch_keys,
    pool_groups,
    sample_without_replacement,
    select_view,
    top_indices,
)
from vtcompress.tokens import LayerQK


def brute_density(keys: np.ndarray, tau: float, m: int, valid: np.ndarray) -> tuple[float, list[bool]]:
    n = keys.shape[0]
    idx = [i for i in range(n) if valid[i]]
    redundant = [False] * n
    for i in idx:
        alike = 0
        for j in idx:
            if j == i:
                continue
            cos = keys[i] @ keys[j] / (np.linalg.norm(keys[i]) * np.linalg.norm(keys[j]))
            alike += cos > tau
        redundant[i] = alike >= m
    return (1.0 - sum(redundant) / len(idx) if idx else 0.0), redundant


@pytest.mark.parametrize("heads", ["concat", "mean"])
@pytest.mark.parametrize("tau,m", [(0.9, 1), (0.8, 3), (0.5, 5)])
def test_density_matches_brute_force(heads, tau, m):
    gen = torch.Generator().manual_seed(1)
    qk = clustered_qk(3, 30, [2, 6, 30], gen)
    valid = torch.rand(3, 30, generator=gen) > 0.2
    keys = patch_keys(qk, heads)
    density, redundant = information_density(keys, tau, m, valid)
    for v in range(3):
        if heads == "concat":
            k = qk.keys[v, 1:].reshape(30, -1).double().numpy()
        else:
            k = qk.keys[v, 1:].double().mean(1).numpy()
        want, want_red = brute_density(k, tau, m, valid[v].numpy())
        assert density[v].item() == pytest.approx(want, abs=1e-6)
        assert redundant[v].tolist() == want_red


def test_density_orders_redundant_views():
    gen = torch.Generator().manual_seed(0)
    density, _ = information_density(patch_keys(clustered_qk(3, 64, [1, 8, 64], gen)), 0.9, 4)
    # One shared key: all redundant; 64 distinct keys: none redundant.
    assert density[0].item() == 0.0 and density[2].item() == 1.0
    assert 0.0 <= density[1].item() <= 1.0


def test_density_of_a_view_without_valid_tokens_is_zero():
    qk = random_qk(2, 9)
    valid = torch.ones(2, 9, dtype=torch.bool)
    valid[1] = False
    density, redundant = information_density(patch_keys(qk), 0.5, 1, valid)
    assert density[1].item() == 0.0 and not redundant[1].any()


def test_cls_patch_probs_is_head_mean_softmax_over_all_keys():
    qk = random_qk(2, 5, heads=3, dh=4)
    probs = cls_patch_probs(qk)
    for v in range(2):
        per_head = []
        for h in range(3):
            logits = qk.keys[v, :, h] @ qk.q_cls[v, h] * qk.scale
            per_head.append(torch.softmax(logits, 0)[1:])
        torch.testing.assert_close(probs[v], torch.stack(per_head).mean(0))


@pytest.mark.parametrize("k", [0.0, 1.5, 3.0])
def test_iqr_rule(k):
    gen = torch.Generator().manual_seed(3)
    scores = torch.rand(40, generator=gen)
    scores[[4, 17, 30]] = torch.tensor([5.0, 2.0, 1.4])
    valid = torch.ones(40, dtype=torch.bool)
    valid[30] = False  # an invalid outlier is never selected and does not move the quartiles
    s = scores[valid].numpy().astype(np.float64)
    q1, q3 = np.percentile(s, 25), np.percentile(s, 75)
    want = [(float(x) > q3 + k * (q3 - q1)) and bool(ok) for x, ok in zip(scores.tolist(), valid.tolist())]
    assert iqr_outliers(scores, k, valid).tolist() == want
    assert iqr_outliers(scores, 1.5, valid)[[4, 17]].all()


def test_iqr_no_outliers_in_flat_scores():
    assert not iqr_outliers(torch.full((16,), 0.25)).any()


def test_sampling_never_repeats_and_is_reproducible():
    gen = torch.Generator().manual_seed(0)
    probs = torch.rand(50, generator=gen) ** 4
    probs[:5] = 0.0  # zero mass: drawn only after every positive index
    for k in (0, 1, 17, 45, 50):
        a = sample_without_replacement(probs, k, torch.Generator().manual_seed(7))
        b = sample_without_replacement(probs, k, torch.Generator().manual_seed(7))
        assert a.tolist() == b.tolist()
        assert len(set(a.tolist())) == k
    full = sample_without_replacement(probs, 50, torch.Generator().manual_seed(7))
    assert sorted(full[45:].tolist()) == [0, 1, 2, 3, 4]
    other = sample_without_replacement(probs, 17, torch.Generator().manual_seed(8))
    assert other.tolist() != sample_without_replacement(probs, 17, torch.Generator().manual_seed(7)).tolist()
    with pytest.raises(ValueError):
        sample_without_replacement(probs, 51)
    with pytest.raises(ValueError):
        sample_without_replacement(-probs, 3)


def test_sampling_follows_the_distribution():
    # First draw ~ p; inclusion in two draws = p_i + sum_{j != i} p_j p_i / (1 - p_j).
    p = torch.tensor([0.4, 0.25, 0.15, 0.1, 0.06, 0.04], dtype=torch.float64)
    trials = 20000
    gen = torch.Generator().manual_seed(1234)
    first = np.zeros(6)
    both = np.zeros(6)
    for _ in range(trials):
        draw = sample_without_replacement(p, 2, gen).tolist()
        first[draw[0]] += 1
        both[draw] += 1
    pn = p.numpy()
    incl = np.array([pn[i] + sum(pn[j] * pn[i] / (1 - pn[j]) for j in range(6) if j != i) for i in range(6)])
    for got, want in ((first / trials, pn), (both / trials, incl)):
        sigma = np.sqrt(want * (1 - want) / trials)
        assert np.all(np.abs(got - want) < 5 * sigma), (got, want)


def test_top_indices_prefers_lower_index_on_ties():
    assert top_indices(torch.tensor([1.0, 3.0, 3.0, 2.0, 3.0]), 3).tolist() == [1, 2, 4]


def test_select_view_global_inside_budget():
    scores = torch.full((20,), 0.01)
    scores[[3, 11]] = torch.tensor([0.5, 0.9])  # the two IQR outliers
    local = torch.linspace(1.0, 0.1, 20)
    kept, glob, local_kept = select_view(scores, local, 6, sampling="topk")
    assert glob.tolist() == [3, 11]
    assert local_kept.tolist() == [0, 1, 2, 4]  # the most attended locally, 3 excluded (already global)
    assert kept.tolist() == [0, 1, 2, 3, 4, 11]
    # Budget below |G|: the most attended global tokens stay.
    kept, glob, local_kept = select_view(scores, local, 1, sampling="topk")
    assert kept.tolist() == [11] and local_kept.numel() == 0
    # Outside: budget counts local tokens only.
    kept, glob, local_kept = select_view(scores, local, 3, combine="disjoint", sampling="topk")
    assert glob.tolist() == [3, 11] and local_kept.tolist() == [0, 1, 2]


def test_select_view_respects_valid_and_draws_local_from_the_rest():
    gen = torch.Generator().manual_seed(5)
    scores = torch.rand(30, generator=gen)
    local = torch.rand(30, generator=gen)
    local[[7, 8]] = 0.0  # no mass: never drawn while mass remains
    valid = torch.ones(30, dtype=torch.bool)
    valid[20:] = False
    for seed in range(20):
        kept, glob, loc = select_view(scores, local, 12, valid, generator=torch.Generator().manual_seed(seed))
        assert kept.numel() == 12 and kept.max() < 20
        assert kept.tolist() == sorted(kept.tolist())
        assert set(kept.tolist()) == set(glob.tolist()) | set(loc.tolist())
        assert not set(glob.tolist()) & set(loc.tolist())
        assert 7 not in loc.tolist() and 8 not in loc.tolist()
    kept, _, _ = select_view(scores, local, 100, valid, generator=torch.Generator().manual_seed(0))
    assert kept.tolist() == list(range(20))


def test_adaptive_budgets():
    density = torch.tensor([0.0, 0.5, 1.0, 0.33, 0.7])
    counts = [576, 576, 576, 300, 0]
    got = adaptive_budgets(density, counts, 0.25)
    want = [1, math.ceil(0.5 * 576 * 0.25), 144, math.ceil(0.33 * 300 * 0.25), 0]
    assert got == want
    assert adaptive_budgets(density, counts, 4.0) == [1, 576, 576, 300, 0]


def test_exact_budgets_sum_and_proportion():
    density = torch.tensor([0.0, 0.2, 0.6, 1.0])
    counts = [100, 100, 100, 50]
    got = exact_budgets(density, counts, 90)
    assert sum(got) == 90 and got[0] == 1 and min(got) >= 1
    assert got[1] < got[2] and all(g <= c for g, c in zip(got, counts))
    assert exact_budgets(density, counts, 1000) == counts
    assert exact_budgets(density, counts, 2) == [1, 1, 1, 1]  # one each even below the total


def test_pool_groups_matches_loops():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 8 * 12, generator=gen)
    got = pool_groups(x, (8, 12), (2, 4), "sum")
    want = torch.zeros(2, 4 * 3)
    for v in range(2):
        for r in range(8):
            for c in range(12):
                want[v, (r // 2) * 3 + c // 4] += x[v, r * 12 + c]
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(pool_groups(x, (8, 12), (2, 4), "mean"), want / 8)
    assert pool_groups(x, (8, 12), (1, 4), "max").shape == (2, 24)
    with pytest.raises(ValueError, match="does not tile"):
        pool_groups(x, (8, 12), (1, 5))


def test_patch_keys_names_the_choices_on_a_bad_head_mode():
    qk = LayerQK(q_cls=torch.zeros(1, 2, 3), keys=torch.zeros(1, 5, 2, 3), scale=1.0)
    assert patch_keys(qk, "concat").shape == (1, 4, 6) and patch_keys(qk, "mean").shape == (1, 4, 3)
    with pytest.raises(ValueError, match=r"heads must be one of \('concat', 'mean'\), got 'sum'"):
        patch_keys(qk, "sum")
