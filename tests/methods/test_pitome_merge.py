"""PiToMe / ToMe merge steps against brute-force loops on small inputs."""

from __future__ import annotations

import math

import pytest
import torch

from vtcompress.budget import keep_count
from vtcompress.merge import (
    MergePlan,
    compose_plans,
    exact_token_schedule,
    first_source,
    initial_owner,
    margin_schedule,
    merge_owner,
    merge_sizes,
    merge_tokens,
    paper_token_schedule,
    pitome_bipartite_plan,
    pitome_energy,
    pitome_plan,
    sizes_from_owner,
    source_onehot,
    token_sources,
    tome_plan,
    tome_r_schedule,
    uses_bipartite,
)


def cos(u: torch.Tensor, v: torch.Tensor) -> float:
    return float(torch.dot(u, v) / (u.norm() * v.norm()))


def brute_energy(m: torch.Tensor, margin: float, temp: float) -> list[float]:
    t = m.shape[0]
    out = []
    for i in range(t):
        acc = 0.0
        for j in range(t):
            z = (cos(m[i], m[j]) - margin) / temp
            acc += z if z > 0 else math.exp(z) - 1.0
        out.append(acc / t)
    return out


def groups_to_tokens(
    x: torch.Tensor, groups: list[list[int]], sizes: list[int] | None = None
) -> torch.Tensor:
    """Size-weighted mean of each group of rows of x [T, C] (sizes None = 1 each)."""
    rows = []
    for g in groups:
        w = torch.tensor([1.0 if sizes is None else float(sizes[i]) for i in g], dtype=torch.float64)
        rows.append((x[g].double() * w[:, None]).sum(0) / w.sum())
    return torch.stack(rows).to(x.dtype)


def brute_pitome_groups(m: torch.Tensor, r: int, margin: float, temp: float = 1.0) -> list[list[int]]:
    t = m.shape[0]
    e = brute_energy(m, margin, temp)
    order = sorted(range(t), key=lambda i: (-e[i], i))
    a, b = order[0 : 2 * r : 2], order[1 : 2 * r : 2]
    groups = {j: [j] for j in b}
    for i in a:
        best = max(b, key=lambda j: cos(m[i], m[j]))
        groups[best].append(i)
    return [[i] for i in order[2 * r :]] + [sorted(groups[j]) for j in b]


def brute_bipartite(m: torch.Tensor, a: list[int], b: list[int], r: int, never: set[int] = frozenset()):
    best = {}
    for i in a:
        if i in never:
            best[i] = (-math.inf, b[0])
        else:
            j = max(b, key=lambda j: cos(m[i], m[j]))
            best[i] = (cos(m[i], m[j]), j)
    ranked = sorted(a, key=lambda i: (-best[i][0], a.index(i)))
    merged, unmerged = ranked[:r], ranked[r:]
    groups = {j: [j] for j in b}
    for i in merged:
        groups[best[i][1]].append(i)
    return unmerged, [sorted(groups[j]) for j in b]


def brute_tome_groups(m_full: torch.Tensor, r: int, class_token: bool) -> list[list[int]]:
    """Groups of patch indices (CLS excluded) in ToMe's output order."""
    seq = list(range(m_full.shape[0]))
    off = int(class_token)
    if r == 0:  # nothing to merge: the sequence is left as it is
        return [[i - off] for i in seq[off:]]
    a, b = seq[0::2], seq[1::2]
    unmerged, bgroups = brute_bipartite(m_full, a, b, r, {0} if class_token else set())
    if class_token:
        unmerged = sorted(unmerged)[1:]
    return [[i - off] for i in unmerged] + [[i - off for i in g] for g in bgroups]


def plan_groups(plan: MergePlan, row: int = 0) -> list[list[int]]:
    assign = plan.assign[row].tolist()
    return [sorted(i for i, s in enumerate(assign) if s == slot) for slot in range(plan.num_out)]


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


# --- energy -----------------------------------------------------------------------------------
@pytest.mark.parametrize("margin,temp", [(0.5, 1.0), (0.1, 0.01), (0.9, 1.0)])
def test_energy_matches_loops(gen, margin, temp):
    m = torch.randn(2, 9, 5, generator=gen)
    e = pitome_energy(m, margin, temp)
    for b in range(2):
        torch.testing.assert_close(
            e[b].double(),
            torch.tensor(brute_energy(m[b], margin, temp), dtype=torch.float64),
            rtol=1e-4,
            atol=1e-5,
        )


# --- plans vs brute force ----------------------------------------------------------------------
@pytest.mark.parametrize("t,r", [(10, 3), (11, 5), (9, 1), (8, 4)])
def test_pitome_plan_matches_loops(gen, t, r):
    m = torch.randn(3, t, 6, generator=gen)
    x = torch.randn(3, t, 4, generator=gen)
    plan = pitome_plan(m, r, margin=0.3)
    assert plan.num_out == t - r
    out = merge_tokens(x, plan)
    for b in range(3):
        groups = brute_pitome_groups(m[b], r, 0.3)
        assert plan_groups(plan, b) == groups
        torch.testing.assert_close(out[b], groups_to_tokens(x[b], groups))


def test_pitome_paper_temperature_changes_ranking_not_rules(gen):
    m = torch.randn(1, 12, 6, generator=gen)
    plan = pitome_plan(m, 4, margin=0.2, temperature=0.01)
    assert plan_groups(plan) == brute_pitome_groups(m[0], 4, 0.2, 0.01)


@pytest.mark.parametrize("t,r", [(10, 3), (11, 5), (7, 2)])
def test_pitome_bipartite_plan_matches_loops(gen, t, r):
    m = torch.randn(2, t, 6, generator=gen)
    plan = pitome_bipartite_plan(m, r, margin=0.4)
    for b in range(2):
        e = brute_energy(m[b], 0.4, 1.0)
        order = sorted(range(t), key=lambda i: (-e[i], i))
        unmerged, bgroups = brute_bipartite(m[b], order[0::2], order[1::2], r)
        assert plan_groups(plan, b) == [[i] for i in unmerged] + bgroups
        assert plan.keep[b].tolist() == unmerged + order[1::2]


@pytest.mark.parametrize("class_token", [True, False])
@pytest.mark.parametrize("t,r", [(10, 3), (11, 5), (12, 6), (9, 0)])
def test_tome_plan_matches_loops(gen, class_token, t, r):
    m = torch.randn(2, t + class_token, 6, generator=gen)
    x = torch.randn(2, t + class_token, 3, generator=gen)
    plan = tome_plan(m, r, class_token=class_token)
    assert plan.num_in == t and plan.num_out == t - min(r, t // 2)
    out = merge_tokens(x, plan, class_token=class_token)
    for b in range(2):
        groups = brute_tome_groups(m[b], min(r, t // 2), class_token)
        assert plan_groups(plan, b) == groups
        body = x[b, int(class_token) :]
        torch.testing.assert_close(out[b, int(class_token) :], groups_to_tokens(body, groups))


def test_r_is_clamped_to_half(gen):
    m = torch.randn(1, 9, 4, generator=gen)
    assert pitome_plan(m, 100, 0.5).num_out == 5
    assert pitome_bipartite_plan(m, 100, 0.5).num_out == 5
    assert tome_plan(torch.randn(1, 10, 4, generator=gen), 100, class_token=True).num_out == 5


# --- merging, sizes, sources -------------------------------------------------------------------
def test_weighted_and_plain_mean(gen):
    x = torch.randn(1, 6, 3, generator=gen)
    plan = MergePlan(assign=torch.tensor([[0, 1, 1, 2, 2, 2]]), keep=torch.tensor([[0, 1, 3]]))
    sizes = torch.tensor([[1, 3, 1, 2, 1, 1]])
    w = merge_tokens(x, plan, sizes, mode="weighted")
    p = merge_tokens(x, plan, sizes, mode="mean")
    torch.testing.assert_close(w[0], groups_to_tokens(x[0], [[0], [1, 2], [3, 4, 5]], sizes[0].tolist()))
    torch.testing.assert_close(p[0], groups_to_tokens(x[0], [[0], [1, 2], [3, 4, 5]]))
    assert merge_sizes(plan, sizes).tolist() == [[1, 4, 4]]
    with pytest.raises(ValueError, match="mode"):
        merge_tokens(x, plan, mode="sum")
    with pytest.raises(ValueError, match="plan expects 6"):
        merge_tokens(x[:, :5], plan)


def test_unmerged_tokens_and_cls_are_copied_exactly(gen):
    x = torch.randn(2, 1 + 20, 8, generator=gen, dtype=torch.float64).to(torch.bfloat16)
    sizes = torch.randint(1, 5, (2, 20), generator=gen)
    plan = pitome_plan(x[:, 1:].float(), 6, margin=0.5)
    out = merge_tokens(x, plan, sizes, class_token=True)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out[:, 0], x[:, 0])
    counts = torch.stack([torch.bincount(a, minlength=plan.num_out) for a in plan.assign])
    single = counts == 1
    kept = torch.stack([x[b, 1:][plan.keep[b]] for b in range(2)])
    assert single.any() and torch.equal(out[:, 1:][single], kept[single])


@pytest.mark.parametrize("kind", ["pitome", "bipartite", "tome"])
def test_sources_after_many_steps(gen, kind):
    """Sizes sum to N0; weighted merging of a fixed tensor is the mean over each token's sources."""
    n0, batch = 40, 3
    x0 = torch.randn(batch, 1 + n0, 5, generator=gen, dtype=torch.float64)
    x, sizes, owner = x0.clone(), None, initial_owner(batch, n0)
    for step, r in enumerate([7, 6, 5, 4, 3]):
        metric = x + 0.1 * torch.randn(x.shape, generator=gen, dtype=torch.float64)
        if kind == "tome":
            plan = tome_plan(metric, r, class_token=True)
        elif kind == "pitome":
            plan = pitome_plan(metric[:, 1:], r, margin=0.9 * (1 - step / 5))
        else:
            plan = pitome_bipartite_plan(metric[:, 1:], r, margin=0.5)
        x = merge_tokens(x, plan, sizes, class_token=True)
        sizes, owner = merge_sizes(plan, sizes), merge_owner(plan, owner)
        assert torch.equal(sizes.sum(1), torch.full((batch,), n0))
        assert torch.equal(sizes, sizes_from_owner(owner, plan.num_out))
    assert x.shape[1] == 1 + n0 - 25
    assert torch.equal(x[:, 0], x0[:, 0])
    onehot = source_onehot(owner, x.shape[1] - 1).double()  # [B, T, N0]
    expected = onehot @ x0[:, 1:] / onehot.sum(-1, keepdim=True)
    torch.testing.assert_close(x[:, 1:], expected)


def test_source_helpers_agree():
    owner = torch.tensor([[2, 0, 0, 1, 2, 1], [0, 1, 2, 2, 2, 0]])
    assert first_source(owner, 3).tolist() == [[1, 3, 0], [0, 1, 2]]
    srcs = token_sources(owner, 3)
    assert [s.tolist() for s in srcs[0]] == [[1, 2], [3, 5], [0, 4]]
    assert [s.tolist() for s in srcs[1]] == [[0, 5], [1], [2, 3, 4]]
    onehot = source_onehot(owner, 3)
    assert onehot.sum(1).eq(1).all() and onehot.sum(2).tolist() == sizes_from_owner(owner, 3).tolist()


def test_compose_plans(gen):
    m = torch.randn(2, 16, 4, generator=gen)
    x = torch.randn(2, 16, 3, generator=gen, dtype=torch.float64)
    p1 = pitome_plan(m, 5, 0.5)
    p2 = pitome_plan(merge_tokens(m, p1), 4, 0.5)
    both = compose_plans(p1, p2)
    assert torch.equal(merge_owner(p2, merge_owner(p1)), both.assign)
    s1 = merge_sizes(p1)
    torch.testing.assert_close(merge_tokens(merge_tokens(x, p1), p2, s1), merge_tokens(x, both))


@pytest.mark.parametrize("kind", ["pitome", "bipartite", "tome"])
def test_batch_equals_one_by_one(gen, kind):
    m = torch.randn(4, 1 + 30, 8, generator=gen)
    sizes = torch.randint(1, 4, (4, 30), generator=gen)

    def run(mm, ss):
        if kind == "tome":
            plan = tome_plan(mm, 9, class_token=True)
        elif kind == "pitome":
            plan = pitome_plan(mm[:, 1:], 9, 0.6)
        else:
            plan = pitome_bipartite_plan(mm[:, 1:], 9, 0.6)
        return plan, merge_tokens(mm, plan, ss, class_token=True)

    plan, out = run(m, sizes)
    for b in range(4):
        pb, ob = run(m[b : b + 1], sizes[b : b + 1])
        assert torch.equal(pb.assign, plan.assign[b : b + 1]) and torch.equal(pb.keep, plan.keep[b : b + 1])
        torch.testing.assert_close(ob, out[b : b + 1], rtol=0, atol=1e-6)


# --- schedules ---------------------------------------------------------------------------------
def test_margin_schedules():
    assert margin_schedule(24) == pytest.approx([0.9 * (1 - i / 24) for i in range(24)])
    assert margin_schedule(12, base=0.75)[6] == pytest.approx(0.375)
    assert uses_bipartite(12) and not uses_bipartite(13)
    with pytest.raises(ValueError):
        margin_schedule(0)


@pytest.mark.parametrize("ratio", [1.0, 0.9, 0.5, 0.33, 0.25, 0.1, 0.02])
@pytest.mark.parametrize("n0,steps", [(576, 23), (576, 4), (100, 12), (17, 3)])
def test_exact_schedule_reaches_the_ratio_rule(ratio, n0, steps):
    keep = keep_count(n0, ratio)
    if keep * 2**steps < n0:
        with pytest.raises(ValueError, match="ratio"):
            exact_token_schedule(n0, keep, steps)
        return
    counts = exact_token_schedule(n0, keep, steps)
    assert len(counts) == steps and counts[-1] == keep
    prev = n0
    for c in counts:
        assert (prev + 1) // 2 <= c <= prev  # a step removes at most half
        prev = c


def test_exact_schedule_is_geometric():
    counts = exact_token_schedule(576, 144, 2)
    assert counts == [288, 144]


def test_paper_schedule_matches_reported_llava_counts():
    # The official LLaVA-1.5 runs report 17..330 of 576 tokens for per-layer ratios 0.85..0.975:
    # 23 merges (outputs of layers 0..22 feed hidden state -2), [CLS] counted in ToMe layers l <= 12.
    flags = [uses_bipartite(layer) for layer in range(23)]
    assert paper_token_schedule(576, 0.85, 23, flags)[-1] == 17
    assert paper_token_schedule(576, 0.975, 23, flags)[-1] == 330
    assert paper_token_schedule(576, 1.0, 23) == [576] * 23
    counts = paper_token_schedule(576, 0.9, 3)
    assert counts == [576 - 57, 519 - 51, 468 - 46]


def test_tome_r_schedule():
    assert tome_r_schedule(4, 8) == [8, 8, 8, 8]
    assert tome_r_schedule(3, [1, 2]) == [1, 2, 0]
    dec = tome_r_schedule(5, (8, -1.0))
    assert dec[0] > dec[-1] and dec == sorted(dec, reverse=True)
    with pytest.raises(ValueError):
        tome_r_schedule(4, (8, 2.0))


# --- proportional attention ----------------------------------------------------------------------
@pytest.mark.parametrize("dh", [4, 7, 8])
def test_proportional_attention_is_exact_with_sdpa(gen, dh):
    from vtcompress.merge import proportional_attention_qkv

    q, k, v = (torch.randn(2, 3, 6, dh, generator=gen, dtype=torch.float64) for _ in range(3))
    sizes = torch.randint(1, 9, (2, 6), generator=gen)
    scale = dh**-0.5
    q2, k2, v2 = proportional_attention_qkv(q, k, v, sizes, scale)
    assert q2.shape[-1] % 8 == 0 and q2.shape[-1] > dh
    out = torch.nn.functional.scaled_dot_product_attention(q2, k2, v2, scale=scale)[..., :dh]
    for b in range(2):
        for h in range(3):
            for i in range(6):
                logits = [scale * float(q[b, h, i] @ k[b, h, j]) + math.log(sizes[b, j]) for j in range(6)]
                w = torch.softmax(torch.tensor(logits, dtype=torch.float64), 0)
                torch.testing.assert_close(out[b, h, i], (w[:, None] * v[b, h]).sum(0))
