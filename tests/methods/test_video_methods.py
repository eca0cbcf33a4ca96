"""Video methods on seeded clips against references written here from the methods' published steps
(loops over tokens in float64, Python's round-half-even), plus counts, order, ratio 1.0 and errors."""

import math

import pytest
import torch

from vtcompress.methods.evs import EVSConfig, evs, evs_keep_count
from vtcompress.methods.vidcom2 import VidCom2Config, vidcom2
from vtcompress.methods.video_baselines import (
    DyCokeTTMConfig,
    VisionZipVideoConfig,
    dycoke_ttm,
    dycoke_ttm_count,
    visionzip_video,
)
from vtcompress.registry import get_method, make_config
from vtcompress.tokens import ImageTokens
from vtcompress.video import (
    VideoLayout,
    clip_frame_counts,
    clip_keep_count,
    clip_kept_count,
    compress_clip,
    frame_budgets,
    vllm_keep_count,
)

ALPHAS = (1 / 8, 1 / 4, 1 / 2, 1, 2)


def clip(frames: int, grid=(3, 4), dim: int = 8, seed: int = 0, dtype=torch.float64) -> ImageTokens:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(frames, grid[0] * grid[1], dim, generator=gen, dtype=dtype)
    return ImageTokens(x, VideoLayout(frames, grid), index=seed)


def kept(outs) -> list[list[int]]:
    return [o.positions.tolist() for o in outs]


# --- references ---------------------------------------------------------------------------------
def ref_vidcom2_scores(x: torch.Tensor):
    T, P, D = x.shape
    rows = x.reshape(T * P, D).tolist()
    n = len(rows)
    means = [sum(r[c] for r in rows) / n for c in range(D)]
    var = [sum((r[c] - means[c]) ** 2 for r in rows) / n for c in range(D)]  # population variance
    channels = sorted(range(D), key=lambda c: var[c])[: D // 2]
    unit = []
    for r in rows:
        sel = [r[c] for c in channels]
        norm = max(math.sqrt(sum(v * v for v in sel)), 1e-12)
        unit.append([v / norm for v in sel])
    video_centre = [sum(u[c] for u in unit) / n for c in range(len(channels))]
    frame_centres = [
        [sum(unit[t * P + i][c] for i in range(P)) / P for c in range(len(channels))] for t in range(T)
    ]

    def sim(u, centre):
        d2 = sum((a - b) ** 2 for a, b in zip(u, centre))
        return sum(math.exp(-d2 / (2 * a)) for a in ALPHAS)

    v = [[sim(unit[t * P + i], video_centre) for i in range(P)] for t in range(T)]
    f = [[sim(unit[t * P + i], frame_centres[t]) for i in range(P)] for t in range(T)]
    return v, f


def ref_vidcom2(x: torch.Tensor, r: float, exact: bool, total: int | None = None):
    T, P, _ = x.shape
    v, f = ref_vidcom2_scores(x)
    score = [-sum(row) / P for row in v]
    top = max(score)
    e = [math.exp((s - top) / 0.01) for s in score]
    p = [a / sum(e) for a in e]
    mean_p = sum(p) / T
    ks = [max(1, round(min(1.0, r * (1 + pt - mean_p)) * P)) for pt in p]  # round: half to even
    sims = [[v[t][i] + f[t][i] for i in range(P)] for t in range(T)]
    keep = [set(sorted(range(P), key=lambda i: sims[t][i])[:k]) for t, k in enumerate(ks)]
    if exact:
        current = sum(len(k) for k in keep)
        flat = [(sims[t][i], t * P + i) for t in range(T) for i in range(P)]
        if current > total:
            ranked = sorted((s for s in flat if s[1] % P in keep[s[1] // P]), key=lambda s: (-s[0], s[1]))
            for _, j in ranked[: current - total]:
                keep[j // P].discard(j % P)
        else:
            ranked = sorted(s for s in flat if s[1] % P not in keep[s[1] // P])
            for _, j in ranked[: total - current]:
                keep[j // P].add(j % P)
    return [sorted(k) for k in keep], ks


def cos(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    return dot / max(math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)), 1e-8)


def ref_evs(x: torch.Tensor, r: float):
    T, P, _ = x.shape
    rows = x.tolist()
    d = [255.0] * P + [1 - cos(rows[t][i], rows[t - 1][i]) for t in range(1, T) for i in range(P)]
    order = sorted(range(T * P), key=lambda j: (-d[j], j))
    chosen = order[: max(P, math.floor(r * T * P))]
    return [sorted(j % P for j in chosen if j // P == t) for t in range(T)]


def ref_dycoke(x: torch.Tensor, r: float, prune_unpaired: bool = False):
    T, P, _ = x.shape
    rows = x.tolist()
    n = int(r * P)

    def least_like(t, ref):
        s = [cos(rows[t][i], rows[ref][i]) for i in range(P)]
        return sorted(sorted(range(P), key=lambda i: s[i])[:n])

    keep = [[] for _ in range(T)]
    for t in range(T):
        if t % 2 == 0 and t + 1 < T:
            keep[t] = list(range(P))
        elif t % 2 == 1:
            keep[t] = least_like(t, t - 1)
    for t in range(2, T - 2, 4):  # frames 2, 6, 10, ... before the last two
        keep[t] = least_like(t, t - 2)
    if T % 2 and prune_unpaired:
        keep[T - 1] = least_like(T - 1, T - 2)
    return keep


# --- VidCom² --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "frames,grid,r,seed", [(4, (3, 4), 0.25, 0), (6, (2, 5), 0.4, 1), (3, (4, 4), 0.7, 2)]
)
def test_vidcom2_paper_matches_the_reference(frames, grid, r, seed):
    c = clip(frames, grid, seed=seed)
    want, ks = ref_vidcom2(c.features, r, exact=False)
    outs = vidcom2(c, VidCom2Config(ratio=r, allocation="paper"))
    assert kept(outs) == want
    assert [o.num_kept for o in outs] == ks
    for t, o in enumerate(outs):  # features are the kept rows, in spatial order
        assert torch.equal(o.features, c.features[t, o.positions])


@pytest.mark.parametrize(
    "frames,grid,r,seed", [(4, (3, 4), 0.25, 3), (5, (3, 3), 0.3, 4), (8, (2, 3), 0.1, 5)]
)
def test_vidcom2_exact_reconciles_to_floor_r_n(frames, grid, r, seed):
    c = clip(frames, grid, seed=seed)
    p = grid[0] * grid[1]
    total = max(frames, math.floor(r * frames * p + 1e-9))
    want, _ = ref_vidcom2(c.features, r, exact=True, total=total)
    outs = vidcom2(c, VidCom2Config(ratio=r))
    assert kept(outs) == want
    assert sum(o.num_kept for o in outs) == total == clip_keep_count(frames, p, r)


def test_vidcom2_rounds_half_to_even_and_reconciles_ties_to_the_earlier_frame():
    # Two identical frames: equal frame scores, so every frame's scale is exactly r and
    # k = round(0.25 * 18) = round(4.5) = 4 (not 5). Exact mode then needs floor(9.0) = 9:
    # one more token, the best unkept one; both frames tie on it, the earlier frame wins.
    frame = torch.randn(1, 18, 6, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    c = ImageTokens(frame.repeat(2, 1, 1), VideoLayout(2, (3, 6)))
    assert [o.num_kept for o in vidcom2(c, VidCom2Config(ratio=0.25, allocation="paper"))] == [4, 4]
    exact = vidcom2(c, VidCom2Config(ratio=0.25))
    assert [o.num_kept for o in exact] == [5, 4]
    assert set(kept(exact)[1]) < set(kept(exact)[0])


def test_vidcom2_count_rules_differ_where_vllm_float_count_loses_a_token():
    # r = 0.1, 4 frames of 150 tokens: floor(60.0) = 60, but vLLM's int(600 * (1 - 0.9)) = 59.
    assert vllm_keep_count(600, 0.1) == 59 and clip_keep_count(4, 150, 0.1) == 60
    assert clip_keep_count(4, 150, 0.1, "vllm") == 59
    c = clip(4, (10, 15), dim=6, seed=8)
    assert sum(o.num_kept for o in vidcom2(c, VidCom2Config(ratio=0.1))) == 60
    assert sum(o.num_kept for o in vidcom2(c, VidCom2Config(ratio=0.1, count="vllm"))) == 59


def test_vidcom2_paper_mode_keeps_the_official_dtype_path():
    c = clip(4, dtype=torch.float32, seed=9)
    outs = vidcom2(c, VidCom2Config(ratio=0.5, allocation="paper"))
    assert all(o.features.dtype == torch.float32 for o in outs)
    assert all(o.num_kept >= 1 for o in outs)


# --- EVS -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "frames,grid,r,seed", [(4, (3, 4), 0.25, 0), (5, (2, 2), 0.6, 1), (3, (3, 3), 0.1, 2)]
)
def test_evs_matches_the_reference(frames, grid, r, seed):
    c = clip(frames, grid, seed=seed)
    outs = evs(c, EVSConfig(ratio=r))
    assert kept(outs) == ref_evs(c.features, r)
    p = grid[0] * grid[1]
    assert outs[0].num_kept == p  # the first frame is kept whole
    assert sum(o.num_kept for o in outs) == evs_keep_count(frames, p, r) == max(p, math.floor(r * frames * p))


def test_evs_keeps_tokens_that_change_and_breaks_ties_by_position():
    # One-hot tokens (cosines exactly 1, 0 or -1). Frame 1 equals frame 0 except at position 2
    # (negated: dissimilarity 2) and 5 (another axis: 1); frame 2 repeats frame 1 (all 0).
    eye = 2 * torch.eye(4, dtype=torch.float64)
    x = eye[torch.arange(9) % 4].repeat(3, 1, 1)
    x[1, 2] = -x[1, 2]
    x[1, 5] = eye[(5 + 1) % 4]
    x[2] = x[1]
    outs = evs(ImageTokens(x, VideoLayout(3, (3, 3))), EVSConfig(ratio=13 / 27))
    # 9 (frame 0) + positions 2 and 5 of frame 1, then two of the tied zeros: lowest flat index first.
    assert kept(outs) == [list(range(9)), [0, 1, 2, 5], []]


def test_evs_count_rule_vllm():
    c = clip(4, (10, 15), dim=4, seed=4)
    assert sum(o.num_kept for o in evs(c, EVSConfig(ratio=0.1))) == 150  # max(P, 60)
    c = clip(12, (10, 15), dim=4, seed=4)
    assert sum(o.num_kept for o in evs(c, EVSConfig(ratio=0.1))) == 180
    assert sum(o.num_kept for o in evs(c, EVSConfig(ratio=0.1, count="vllm"))) == 179


# --- baselines -----------------------------------------------------------------------------------
@pytest.mark.parametrize("frames", [1, 2, 5, 7, 10])
def test_dycoke_ttm_matches_the_reference(frames):
    c = clip(frames, (3, 4), seed=frames)
    outs = dycoke_ttm(c, DyCokeTTMConfig(ratio=0.25))
    assert kept(outs) == (ref_dycoke(c.features, 0.25) if frames > 1 else [list(range(12))])
    assert sum(o.num_kept for o in outs) == dycoke_ttm_count(frames, 12, 0.25)
    if frames % 2 and frames > 1:
        assert outs[-1].num_kept == 0  # the official code drops the unpaired last frame
        pruned = dycoke_ttm(c, DyCokeTTMConfig(ratio=0.25, unpaired="prune"))
        assert kept(pruned) == ref_dycoke(c.features, 0.25, prune_unpaired=True)
        assert sum(o.num_kept for o in pruned) == dycoke_ttm_count(frames, 12, 0.25, "prune")


def test_dycoke_ttm_uses_the_official_float_keep_ratio():
    # r = 0.1 on 150 tokens: 1 - (1 - 0.1) = 0.0999..., so int(.. * 150) = 14, not 15.
    outs = dycoke_ttm(clip(2, (10, 15), dim=4), DyCokeTTMConfig(ratio=0.1))
    assert [o.num_kept for o in outs] == [150, 14]


def ref_visionzip(frame: torch.Tensor, m: int, dominant: float = 0.6, neighbors: int = 5):
    P = frame.shape[0]
    rows = frame.tolist()
    norms = [math.sqrt(sum(v * v for v in r)) for r in rows]
    n_dom = max(1, int(m * dominant))
    dom = sorted(sorted(range(P), key=lambda i: -norms[i])[:n_dom])
    rest = [i for i in range(P) if i not in dom]
    n_ctx = m - n_dom
    density = []
    for i in rest:
        s = sorted((cos(rows[i], rows[j]) for j in rest if j != i), reverse=True)[:neighbors]
        density.append(sum(s) / len(s))
    anchors = sorted(sorted(range(len(rest)), key=lambda a: -density[a])[:n_ctx])
    groups = {a: [] for a in anchors}
    for tok in rest:
        groups[max(anchors, key=lambda a: (cos(rows[tok], rows[rest[a]]), -a))].append(tok)
    sizes = {i: 1 for i in dom} | {rest[a]: max(1, len(g)) for a, g in groups.items()}
    feats = {i: rows[i] for i in dom}
    for a, g in groups.items():
        feats[rest[a]] = (
            [sum(rows[t][c] for t in g) / len(g) for c in range(frame.shape[1])] if g else rows[rest[a]]
        )
    order = sorted(sizes)
    return order, [sizes[i] for i in order], torch.tensor([feats[i] for i in order], dtype=frame.dtype)


def test_visionzip_video_matches_the_reference():
    c = clip(3, (4, 5), dim=6, seed=11)
    outs = visionzip_video(c, VisionZipVideoConfig(ratio=0.3))  # m = 6 per frame: 3 dominant, 3 contextual
    for t, o in enumerate(outs):
        positions, sizes, feats = ref_visionzip(c.features[t], 6)
        assert o.positions.tolist() == positions
        assert o.sizes.tolist() == sizes and sum(sizes) == 20
        torch.testing.assert_close(o.features, feats)


# --- image methods per frame -----------------------------------------------------------------------
@pytest.mark.parametrize("method", ["uniform", "random", "pitome", "tome"])
def test_image_methods_run_per_frame_with_an_even_split_of_floor_r_n(method):
    c = clip(5, (3, 4), dtype=torch.float32, seed=12)
    config = make_config(
        method, ratio=0.3, **({"metric": "projected"} if method in ("pitome", "tome") else {})
    )
    outs = compress_clip(get_method(method), config, c)
    assert frame_budgets(c.layout, 0.3) == [4, 4, 4, 3, 3]  # floor(0.3 * 60) = 18 over 5 frames
    assert [o.num_kept for o in outs] == [4, 4, 4, 3, 3]
    for t, o in enumerate(outs):  # each frame is the image method on that frame at its budget
        frame = ImageTokens(c.features[t : t + 1], c.layout.frame_layout())
        alone = get_method(method).compress(frame, config.replace(ratio=o.num_kept / 12))[0]
        assert o.positions.tolist() == alone.positions.tolist()
        assert torch.equal(o.features, alone.features)
        assert o.positions.tolist() == sorted(o.positions.tolist())


def test_uniform_per_frame_positions():
    outs = compress_clip(get_method("uniform"), make_config("uniform", ratio=0.25), clip(2, (2, 4)))
    assert kept(outs) == [[2, 6], [2, 6]]  # 2 of 8 per frame: floor((j + 1/2) * 8 / 2)


def test_frame_budgets_keep_one_token_per_frame_at_least():
    layout = VideoLayout(6, (1, 2))
    assert clip_keep_count(6, 2, 0.1) == 6 and frame_budgets(layout, 0.1) == [1] * 6


# --- every method: ratio 1.0, order, bad input -------------------------------------------------------
VIDEO_METHODS = ["vidcom2", "evs", "dycoke_ttm", "visionzip_video"]


@pytest.mark.parametrize("method", VIDEO_METHODS + ["uniform", "random"])
def test_ratio_one_keeps_every_token_in_order(method):
    c = clip(3)
    outs = compress_clip(get_method(method), make_config(method, ratio=1.0), c)
    assert kept(outs) == [list(range(12))] * 3
    assert all(torch.equal(o.features, c.features[t]) for t, o in enumerate(outs))


@pytest.mark.parametrize("method", VIDEO_METHODS)
def test_video_methods_keep_spatial_order_and_real_rows(method):
    c = clip(6, seed=13)
    outs = compress_clip(get_method(method), make_config(method, ratio=0.4), c)
    for t, o in enumerate(outs):
        pos = o.positions.tolist()
        assert pos == sorted(set(pos)) and all(0 <= p < 12 for p in pos)
        if o.sizes is None:
            assert torch.equal(o.features, c.features[t, o.positions])


@pytest.mark.parametrize("method", VIDEO_METHODS)
def test_video_methods_refuse_images(method):
    from vtcompress.layout import UniformGridLayout

    image = ImageTokens(torch.randn(1, 12, 4), UniformGridLayout(0, 0, (3, 4)))
    with pytest.raises(ValueError, match="compresses videos only"):
        get_method(method).compress(image, make_config(method, ratio=0.5))


def test_bad_clip_inputs_are_refused():
    with pytest.raises(ValueError, match="at least one frame"):
        VideoLayout(0, (3, 4))
    bad = ImageTokens(torch.randn(3, 11, 4), VideoLayout(3, (3, 4)))
    with pytest.raises(ValueError, match="do not match 3 frames x 12 tokens"):
        compress_clip(get_method("vidcom2"), VidCom2Config(ratio=0.5), bad)
    with pytest.raises(ValueError, match="allocation must be one of"):
        VidCom2Config(allocation="even")
    with pytest.raises(ValueError, match="count must be one of"):
        EVSConfig(count="ceil")
    with pytest.raises(ValueError, match="dominant"):
        VisionZipVideoConfig(dominant=0.0)


def test_methods_say_what_they_compress_and_image_hosts_refuse_video_methods():
    from vtcompress.config import VIDEO
    from vtcompress.registry import available_methods

    assert set(VIDEO_METHODS) <= set(available_methods()) and set(VIDEO_METHODS).isdisjoint(
        available_methods("image")
    )
    assert {"uniform", "globalcom2"} <= set(available_methods("image")) <= set(available_methods("video"))
    assert VIDEO in VidCom2Config().requirements(23, 24)
    assert VIDEO not in make_config("uniform").requirements(23, 24)


@pytest.mark.parametrize("method", VIDEO_METHODS + ["uniform", "tome"])
@pytest.mark.parametrize(
    "frames,grid,r", [(1, (3, 4), 0.25), (5, (3, 4), 0.3), (6, (2, 5), 0.1), (4, (4, 4), 1.0)]
)
def test_clip_counts_are_known_before_the_model_runs(method, frames, grid, r):
    options = {"metric": "projected"} if method == "tome" else {}
    config = make_config(method, ratio=r, **options)
    c = clip(frames, grid, dtype=torch.float32, seed=frames)
    kept = sum(o.num_kept for o in compress_clip(get_method(method), config, c))
    assert clip_kept_count(config, c.layout) == kept


@pytest.mark.parametrize("method", ["dycoke_ttm", "visionzip_video", "uniform", "tome"])
@pytest.mark.parametrize(
    "frames,grid,r", [(1, (3, 4), 0.25), (5, (3, 4), 0.3), (7, (2, 5), 0.1), (4, (4, 4), 1.0)]
)
def test_frame_counts_are_known_before_the_model_runs(method, frames, grid, r):
    options = {"metric": "projected"} if method == "tome" else {}
    config = make_config(method, ratio=r, **options)
    c = clip(frames, grid, dtype=torch.float32, seed=frames)
    outs = compress_clip(get_method(method), config, c)
    assert clip_frame_counts(config, c.layout) == [o.num_kept for o in outs]


@pytest.mark.parametrize("method", ["evs", "vidcom2"])
def test_content_split_over_frames_has_no_frame_counts(method):
    layout = VideoLayout(4, (3, 4))
    assert clip_frame_counts(make_config(method, ratio=0.3), layout) is None
    assert clip_frame_counts(make_config(method, ratio=1.0), layout) == [12] * 4


def test_vidcom2_paper_count_depends_on_content():
    assert clip_kept_count(VidCom2Config(ratio=0.3, allocation="paper"), VideoLayout(4, (3, 4))) is None
