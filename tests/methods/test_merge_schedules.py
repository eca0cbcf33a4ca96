"""Per-layer behaviour of the merging methods: what a config merges at a given depth.

The batched == per-image and ratio-1.0 tests cannot see a wrong per-layer setting, since both
paths share it. Here every expectation is computed in the test from the documented rules
(docs/methods/merging.md), in float64 loops that call nothing of ``vtcompress.merge``:

* PiToMe's margin ``m_l = margin * (1 - l / L)``; ToMe matching for tower layers
  ``l <= bipartite_until`` (12 on HF CLIP), PiToMe steps after it;
* the tower's exact count schedule ``T_s = round(N0 (K / N0) ** (s / F))`` and the paper
  schedule ``r = floor(T' - T' rho)`` (T' counts the [CLS] in ToMe-matching layers);
* which tokens merge on hand-made inputs (a redundant cluster merges, isolated tokens stay).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from vtcompress.integrations.clip_merge import tower_merge_for
from vtcompress.merge import merge_tokens
from vtcompress.methods.merging import merge_view
from vtcompress.methods.pitome import PiToMeConfig
from vtcompress.methods.tome import ToMeConfig

L = 24  # CLIP ViT-L depth; LLaVA reads hidden state -2, so merges run after layers 0..22


# --- independent references (float64 loops) -------------------------------------------------------
def cosine(m: torch.Tensor) -> torch.Tensor:
    u = m.double() / m.double().norm(dim=-1, keepdim=True)
    return u @ u.T


def ref_energy(m: torch.Tensor, margin: float, temperature: float) -> list[float]:
    z = (cosine(m) - margin) / temperature
    return torch.where(z > 0, z, torch.expm1(z)).mean(1).tolist()


def ref_pitome(m: torch.Tensor, r: int, margin: float, temperature: float) -> list[list[int]]:
    """PiToMe step on m [T, D] as documented; groups of input tokens in output order."""
    t = m.shape[0]
    r = min(r, t // 2)
    e = ref_energy(m, margin, temperature)
    order = sorted(range(t), key=lambda i: (-e[i], i))
    gaps = [e[order[i]] - e[order[i + 1]] for i in range(t - 1)]
    assert min(gaps) > 1e-6, "near-tied energies: pick another input"
    s = cosine(m)
    a, b = order[0 : 2 * r : 2], order[1 : 2 * r : 2]
    groups = {j: [j] for j in b}
    for i in a:
        groups[max(b, key=lambda j: float(s[i, j]))].append(i)
    return [[i] for i in order[2 * r :]] + [sorted(groups[j]) for j in b]


def ref_tome_cls(m: torch.Tensor, r: int) -> list[list[int]]:
    """ToMe step on m [1+T, D] ([CLS] first, in A, never merged); groups over the T patches
    (0-based, [CLS] excluded) in output order: unmerged A by position, then B."""
    n = m.shape[0]
    r = min(r, (n - 1) // 2)
    s = cosine(m)
    a, b = list(range(2, n, 2)), list(range(1, n, 2))  # A without the [CLS] at position 0
    best = {i: max(b, key=lambda j: float(s[i, j])) for i in a}
    ranked = sorted(a, key=lambda i: (-float(s[i, best[i]]), i))
    groups = {j: [j] for j in b}
    for i in ranked[:r]:
        groups[best[i]].append(i)
    unmerged = sorted(ranked[r:])
    return [[i - 1] for i in unmerged] + [sorted(k - 1 for k in groups[j]) for j in b]


def groups_of(plan, row: int = 0) -> list[list[int]]:
    out = [[] for _ in range(plan.num_out)]
    for i, slot in enumerate(plan.assign[row].tolist()):
        out[slot].append(i)
    return out


def apply_groups(x: torch.Tensor, groups: list[list[int]], sizes: list[int], weighted: bool):
    """Merge rows of x [T, C] by groups: (size-weighted) mean; sizes add up."""
    rows, new_sizes = [], []
    for g in groups:
        w = torch.tensor([float(sizes[i]) if weighted else 1.0 for i in g], dtype=torch.float64)
        rows.append((x[g].double() * w[:, None]).sum(0) / w.sum())
        new_sizes.append(sum(sizes[i] for i in g))
    return torch.stack(rows), new_sizes


def metric(seed: int, tokens: int, dims: int = 6) -> torch.Tensor:
    return torch.randn(tokens, dims, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# --- one step at several depths -------------------------------------------------------------------
DEPTHS = [0, 5, 12, 13, 18, 22]
SEEDS = {0: 157}  # inputs on which the margins of neighbouring layers give other plans (checked below)


@pytest.mark.parametrize("layer", DEPTHS)
@pytest.mark.parametrize("temperature", [1.0, 0.05])
def test_pitome_step_uses_the_margin_of_its_layer(layer, temperature):
    """Without a [CLS] (projector placement) every layer is a PiToMe step at ``0.9 (1 - l/L)``."""
    config = PiToMeConfig(ratio=0.5, temperature=temperature)
    m = metric(seed=SEEDS.get(layer, 0), tokens=20)
    margin = 0.9 * (1 - layer / L)
    expected = ref_pitome(m, 6, margin, temperature)
    got = groups_of(config.plan(m[None].float(), 6, layer, L, class_token=False))
    assert got == expected


def test_the_margin_changes_the_plan_on_these_inputs():
    """The inputs above can tell margins apart: a step at the margin of a neighbouring layer,
    or at a constant margin, merges other tokens (so the test above would see such a bug)."""
    for layer in DEPTHS:
        m = metric(seed=SEEDS.get(layer, 0), tokens=20)
        margin = 0.9 * (1 - layer / L)
        right = ref_pitome(m, 6, margin, 0.05)
        wrong = [0.9 * (1 - (layer + 1) / L), 0.9, 0.75 * (1 - layer / L), 0.9 * (1 - layer / (L - 1))]
        if layer:
            wrong.append(0.9 * (1 - (layer - 1) / L))
        wrong = [w for w in wrong if abs(w - margin) > 1e-9]
        assert all(ref_pitome(m, 6, w, 0.05) != right for w in wrong), layer


@pytest.mark.parametrize("layer", [0, 11, 12, 13, 14, 22])
def test_tower_layers_up_to_bipartite_until_use_tome_matching(layer):
    """With a [CLS] (in the tower): ToMe matching for ``l <= 12``, PiToMe steps (margin of l) after."""
    config = PiToMeConfig(ratio=0.5, placement="tower", temperature=0.05)
    m = metric(seed=100 + layer, tokens=1 + 16)
    tome, pitome = ref_tome_cls(m, 5), ref_pitome(m[1:], 5, 0.9 * (1 - layer / L), 0.05)
    assert tome != pitome  # the input tells the two steps apart
    got = groups_of(config.plan(m[None].float(), 5, layer, L, class_token=True))
    assert got == (tome if layer <= 12 else pitome)


@pytest.mark.parametrize("until", [-1, 0, 3])
def test_bipartite_until_is_a_setting(until):
    config = PiToMeConfig(ratio=0.5, placement="tower", bipartite_until=until)
    for layer in range(6):
        m = metric(seed=200 + layer, tokens=1 + 12)
        expected = ref_tome_cls(m, 4) if layer <= until else ref_pitome(m[1:], 4, 0.9 * (1 - layer / L), 1.0)
        assert groups_of(config.plan(m[None].float(), 4, layer, L, class_token=True)) == expected, layer


@pytest.mark.parametrize("layer", [0, 13, 22])
def test_tome_matches_by_position_at_every_depth(layer):
    """ToMe has no depth-dependent setting: the same plan at every layer, with or without [CLS]."""
    m = metric(seed=300 + layer, tokens=1 + 14)
    got = groups_of(ToMeConfig(ratio=0.5).plan(m[None].float(), 4, layer, L, class_token=True))
    assert got == ref_tome_cls(m, 4)


# --- which tokens merge on hand-made inputs -------------------------------------------------------
def clusters() -> torch.Tensor:
    """8 tokens: a tight pair {0, 5} (cos 0.995), a loose group {1, 2, 6, 7} (pairwise cos 0.4) and
    two isolated tokens {3, 4} (opposite each other); the three sets are mutually orthogonal.

    Energies (temperature 1): the pair's two similarities are far above any margin, the group's
    0.4 similarities count for more once the margin falls below about 0.5. With
    ``m_l = 0.9 (1 - l/24)`` the pair is the most redundant up to layer 10 (m = 0.525) and the
    group from layer 11 (m = 0.4875) on (worked out by hand from the energy formula).
    """
    e = torch.eye(10, dtype=torch.float64)
    loose_norm = math.sqrt(1 / 0.4 - 1)  # base + orthogonal part of this norm: pairwise cos 0.4
    rows = {0: e[0], 5: e[0] + 0.1 * e[1], 3: e[9], 4: -e[9]}
    for k, i in enumerate((1, 2, 6, 7)):
        rows[i] = e[2] + loose_norm * e[3 + k]
    return torch.stack([rows[i] for i in range(8)])


@pytest.mark.parametrize("layer", range(0, 23))
def test_which_pair_merges_depends_on_the_layer(layer):
    m = clusters()
    assert (
        abs(float(cosine(m)[1, 2]) - 0.4) < 1e-12
        and abs(float(cosine(m)[0, 5]) - 1 / math.sqrt(1.01)) < 1e-12
    )
    plan = PiToMeConfig(ratio=0.5).plan(m[None].float(), 1, layer, L, class_token=False)
    (merged,) = [g for g in groups_of(plan) if len(g) > 1]  # r = 1: the two highest-energy tokens
    if layer <= 10:
        assert merged == [0, 5]
    else:  # two of the loose group (their energies tie up to float32 rounding)
        assert len(merged) == 2 and set(merged) <= {1, 2, 6, 7}


@pytest.mark.parametrize("layer", [0, 10, 11, 22])
def test_isolated_tokens_are_protected(layer):
    """r = 3: the six redundant tokens merge pairwise; the isolated ones are kept as they are."""
    plan = PiToMeConfig(ratio=0.5).plan(clusters()[None].float(), 3, layer, L, class_token=False)
    groups = groups_of(plan)
    assert len(groups) == 5 and [3] in groups and [4] in groups
    assert [0, 5] in groups  # the tight pair always merges together


# --- schedules over the tower ---------------------------------------------------------------------
@pytest.mark.parametrize("ratio", [0.5, 0.25, 0.1])
def test_exact_tower_schedule_is_geometric(ratio):
    """``T_s = round(576 (K/576) ** (s/23))``, one step per layer, ``T_23 = K``."""
    k = math.floor(576 * ratio)
    expected = [round(576 * (k / 576) ** (s / 23)) for s in range(1, 24)]
    for config in (PiToMeConfig(ratio=ratio, placement="tower"), ToMeConfig(ratio=ratio, placement="tower")):
        schedule = config.tower_schedule(576, 23)
        assert schedule == [[c] for c in expected]
        assert schedule[-1] == [k]


def test_a_shallow_tower_takes_extra_steps_in_its_first_layers():
    """64 patches to 4 in 2 layers needs 4 halvings: two steps in each layer, geometric counts."""
    schedule = PiToMeConfig(ratio=4 / 64, placement="tower").tower_schedule(64, 2)
    assert schedule == [[32, 16], [8, 4]]
    schedule = PiToMeConfig(ratio=4 / 64, placement="tower").tower_schedule(64, 3)  # 4 steps, 3 layers
    assert schedule == [[32, 16], [8], [4]]


def paper_counts(patches: int, rho: float, layers: int, counts_cls) -> list[int]:
    out, t = [], patches
    for layer in range(layers):
        seen = t + (1 if counts_cls(layer) else 0)
        t -= min(math.floor(seen - seen * rho), t // 2)
        out.append(t)
    return out


@pytest.mark.parametrize("rho", [0.85, 0.9, 0.975])
def test_paper_schedule_counts_the_cls_in_tome_matching_layers(rho):
    """``r = floor(T' - T' rho)``: T' counts the [CLS] in layers <= 12 for pitome, in every layer for tome."""
    pitome = PiToMeConfig.paper(layer_ratio=rho).tower_schedule(576, 23)
    tome = ToMeConfig.paper(layer_ratio=rho).tower_schedule(576, 23)
    assert pitome == [[c] for c in paper_counts(576, rho, 23, lambda layer: layer <= 12)]
    assert tome == [[c] for c in paper_counts(576, rho, 23, lambda layer: True)]
    off = PiToMeConfig.paper(layer_ratio=rho, bipartite_until=-1).tower_schedule(576, 23)
    assert off == [[c] for c in paper_counts(576, rho, 23, lambda layer: False)]


def test_paper_schedule_switches_counting_after_layer_12():
    """Over many per-layer ratios, pitome's counts equal the rule with the [CLS] counted up to and
    including layer 12; for some of them (0.82, 0.89) counting it only up to layer 11, or up to
    layer 13, gives other counts, so an off-by-one in the switch shows."""
    rhos = [i / 100 for i in range(80, 100)]
    for rho in rhos:
        got = PiToMeConfig.paper(layer_ratio=rho).tower_schedule(576, 23)
        assert got == [[c] for c in paper_counts(576, rho, 23, lambda layer: layer <= 12)], rho
    for shifted in (lambda layer: layer < 12, lambda layer: layer <= 13):
        assert any(
            paper_counts(576, rho, 23, shifted) != paper_counts(576, rho, 23, lambda layer: layer <= 12)
            for rho in rhos
        )


def test_paper_schedule_first_layers_by_hand():
    # rho 0.9: layer 0 sees 577 (with [CLS]): r = floor(577 - 519.3) = 57 -> 519; layer 1 sees 520: r = 52
    assert PiToMeConfig.paper(layer_ratio=0.9).tower_schedule(576, 23)[:2] == [[519], [467]]
    # no layer_ratio: rho = ratio ** (1 / F)
    rho = 0.25 ** (1 / 23)
    assert PiToMeConfig.paper(ratio=0.25).tower_schedule(576, 23) == [
        [c] for c in paper_counts(576, rho, 23, lambda layer: layer <= 12)
    ]


# --- the whole tower: every layer's step, through the hooks ---------------------------------------
class Passthrough(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


@pytest.mark.parametrize(
    "config",
    [
        PiToMeConfig(ratio=8 / 36, placement="tower", temperature=0.05, bipartite_until=1),
        PiToMeConfig.paper(layer_ratio=0.8, temperature=0.05, bipartite_until=2),
        ToMeConfig(ratio=8 / 36, placement="tower"),
    ],
    ids=["pitome-exact", "pitome-paper", "tome"],
)
def test_tower_hooks_run_each_layers_step(config):
    """Merges after layers 0..F-1 of a tower (layers that pass their input through), each with
    that layer's matching, margin and count; compared with the documented steps in float64."""
    num_layers, score_layer, patches = 6, 5, 36
    layers = [Passthrough() for _ in range(num_layers)]
    tower = tower_merge_for(layers, config, score_layer, num_layers, enabled=lambda: True)
    x0 = metric(seed=7, tokens=1 + patches, dims=5).float()
    x = x0[None]
    for layer in layers:
        x = layer(x)
    # expected: the documented step of each layer on the (merged) states, weighted or plain mean
    pitome = isinstance(config, PiToMeConfig)
    until = config.bipartite_until if pitome else num_layers
    ref, sizes, owner = x0.double(), [1] * patches, list(range(patches))
    counts = []
    for layer in range(score_layer):
        t = ref.shape[0] - 1
        if config.schedule == "paper":
            seen = t + int(layer <= until)
            target = t - min(math.floor(seen - seen * config.layer_ratio), t // 2)
        else:
            k = math.floor(patches * config.ratio)
            target = round(patches * (k / patches) ** ((layer + 1) / score_layer))
        if layer <= until:
            groups = ref_tome_cls(ref, t - target)
        else:
            groups = ref_pitome(
                ref[1:], t - target, config.margin * (1 - layer / num_layers), config.temperature
            )
        body, sizes = apply_groups(ref[1:], groups, sizes, config.merge == "weighted")
        ref = torch.cat([ref[:1], body])
        slot = {i: s for s, g in enumerate(groups) for i in g}
        owner = [slot[o] for o in owner]
        counts.append(target)
    assert tower.token_counts == counts
    assert tower.owner[0].tolist() == owner
    assert tower.sizes[0].tolist() == sizes
    torch.testing.assert_close(x[0].double(), ref, atol=1e-5, rtol=0)


# --- the projector placement: the margin of the last merge layer ---------------------------------
@pytest.mark.parametrize("layer", [13, 22])
def test_projector_merge_view_uses_the_given_layers_margin(layer):
    """``merge_view`` merges n tokens to k in ``max(steps, ceil(log2 n/k))`` geometric steps, every
    step a PiToMe step at the margin of ``layer``; sizes add up and features are size-weighted."""
    n, keep = 24, 5
    m = metric(seed=40 + layer, tokens=n)
    feats = metric(seed=41, tokens=n, dims=3)
    config = PiToMeConfig(ratio=0.25, temperature=0.05)
    out, sizes, owner = merge_view(feats.float(), m.float(), keep, config, layer, L)
    steps = max(config.steps, math.ceil(math.log2(n / keep)))
    targets = [round(n * (keep / n) ** (s / steps)) for s in range(1, steps + 1)]
    ref_m, ref_x, ref_sizes, ref_owner = m, feats, [1] * n, list(range(n))
    for target in targets:
        groups = ref_pitome(ref_m, ref_m.shape[0] - target, 0.9 * (1 - layer / L), 0.05)
        ref_x, _ = apply_groups(ref_x, groups, ref_sizes, weighted=True)
        ref_m, ref_sizes = apply_groups(ref_m, groups, ref_sizes, weighted=True)
        slot = {i: s for s, g in enumerate(groups) for i in g}
        ref_owner = [slot[o] for o in ref_owner]
    assert owner.tolist() == ref_owner and sizes.tolist() == ref_sizes
    torch.testing.assert_close(out.double(), ref_x, atol=1e-5, rtol=0)


def test_merge_tokens_weighted_and_mean_by_hand():
    """The two merge modes on three numbers: sizes weigh only in weighted mode."""
    x = torch.tensor([[[1.0], [3.0], [10.0]]])
    plan = PiToMeConfig(ratio=0.5).plan(
        torch.tensor([[[1.0, 0.0], [1.0, 0.01], [0.0, 1.0]]]), 1, 22, L, False
    )
    assert groups_of(plan) == [[2], [0, 1]]
    sizes = torch.tensor([[3, 1, 1]])
    assert merge_tokens(x, plan, sizes, "weighted").flatten().tolist() == [10.0, (3 * 1 + 3) / 4]
    assert merge_tokens(x, plan, sizes, "mean").flatten().tolist() == [10.0, 2.0]
