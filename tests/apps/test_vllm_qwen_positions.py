"""The rotary-position bookkeeping and the settings of the vLLM M-RoPE models, without vLLM:
positions of a compressed prompt equal the kept columns of transformers' uncompressed positions,
however the prompt is split into prefill steps."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from vtcompress.integrations.vllm import mrope_positions as mp
from vtcompress.integrations.vllm.mrope_settings import (
    MRopeFamily,
    check_media,
    clip_count,
    frame_counts,
    image_count,
    resolve_settings,
    server_settings,
)

IMG, VID, VS = 6, 7, 4  # image, video and vision-start token ids
DEFAULTS = {"pitome": {"metric": "projected"}, "tome": {"metric": "projected"}}
QWEN25 = MRopeFamily("Qwen2.5-VL", DEFAULTS, videos=True)
QWEN3 = MRopeFamily("Qwen3-VL", DEFAULTS, videos=False)


def uncompressed(layout):
    """transformers' rule on an uncompressed prompt: ``layout`` is a list of ("text", n) and
    ("media", token, t, h, w, t_step); returns ids and positions [3, L]."""
    ids, cols, cur = [], [], 0
    for part in layout:
        if part[0] == "text":
            ids += [1] * part[1]
            cols += [[cur + i] * 3 for i in range(part[1])]
            cur += part[1]
        else:
            _, token, t, h, w, step = part
            rel = mp.grid_positions(t, h, w, step)
            ids += [token] * rel.shape[0]
            cols += (rel + cur).tolist()
            cur += max(h, w)
    return torch.tensor(ids), torch.tensor(cols).T


def compressed_prompt(layout, keeps):
    """The compressed prompt: ids, the kept columns of the uncompressed positions, the media
    runs (offset, kept, advance) and each run's kept rows' relative positions."""
    ids, pos = uncompressed(layout)
    keep = torch.ones(len(ids), dtype=torch.bool)
    runs, rels, start, k = [], [], 0, 0
    for part in layout:
        if part[0] == "text":
            start += part[1]
            continue
        _, token, t, h, w, step = part
        n = t * h * w
        kept = keeps[k]
        k += 1
        mask = torch.zeros(n, dtype=torch.bool)
        mask[kept] = True
        keep[start : start + n] = mask
        rels.append(mp.grid_positions(t, h, w, step)[kept])
        start += n
    offsets, i = [], 0
    for part in layout:  # offsets in the short prompt
        if part[0] == "text":
            i += part[1]
        else:
            offsets.append(i)
            i += len(keeps[len(offsets) - 1])
    for off, kept, part in zip(offsets, keeps, [p for p in layout if p[0] != "text"]):
        runs.append((off, len(kept), max(part[3], part[4])))
    return ids[keep], pos[:, keep], runs, rels


LAYOUT = [
    ("text", 3), ("media", IMG, 1, 3, 4, 1.0), ("text", 2),
    ("media", VID, 4, 2, 2, 2.0), ("text", 1), ("media", IMG, 1, 5, 2, 1.0), ("text", 4),
]  # fmt: skip
KEEPS = [[0, 5, 6, 11], [0, 3, 5, 9, 15], [1, 2, 8]]
# Qwen3-VL: every frame of a clip its own run after its timestamp and <|vision_start|>; the
# middle frame keeps nothing (its markers and timestamp stay)
FRAMES = [
    ("text", 3), ("media", VID, 1, 2, 3, 1.0), ("text", 4), ("media", VID, 1, 2, 3, 1.0),
    ("text", 4), ("media", VID, 1, 2, 3, 1.0), ("text", 2),
]  # fmt: skip
FRAME_KEEPS = [[0, 4, 5], [], [2]]
PROMPTS = {"image-clip-image": (LAYOUT, KEEPS), "frame-runs-one-empty": (FRAMES, FRAME_KEEPS)}


def embeddings(rels):
    return [mp.with_positions(torch.randn(len(r), 8), r) for r in rels]


@pytest.mark.parametrize("shape", list(PROMPTS))
def test_initial_text_positions_and_delta_match_transformers(shape):
    ids, want, runs, _ = compressed_prompt(*PROMPTS[shape])
    got, delta = mp.initial_positions(len(ids), runs)
    text = ~((ids == IMG) | (ids == VID))
    assert torch.equal(got[:, text], want[:, text])
    assert delta == int(want[0, -1]) + 1 - len(ids)


@pytest.mark.parametrize("shape", list(PROMPTS))
@pytest.mark.parametrize("step", [1, 3, 7, 100])
def test_recompute_in_prefill_steps_gives_the_uncompressed_kept_positions(step, shape):
    ids, want, runs, rels = compressed_prompt(*PROMPTS[shape])
    positions, _ = mp.initial_positions(len(ids), runs)
    rows = embeddings(rels)
    media = torch.nonzero((ids == IMG) | (ids == VID)).flatten().tolist()
    run_of = [i for i, r in enumerate(runs) for _ in range(r[1])]
    for start in range(0, len(ids), step):  # what the runner passes for each step
        in_step = [m for m in media if start <= m < start + step]
        pieces = []
        for m in in_step:
            run = run_of[media.index(m)]
            idx = media.index(m) - sum(r[1] for r in runs[:run])
            pieces.append(rows[run][idx : idx + 1])
        feats, positions, delta = mp.recompute_positions(ids, pieces, positions, start, [IMG, VID])
        assert all(f.shape[1] == 8 for f in feats)
    assert torch.equal(positions, want)
    assert delta == int(want[0, -1]) + 1 - len(ids)
    again = mp.recompute_positions(ids, rows, positions, 0, [IMG, VID])[1]
    assert torch.equal(again, want)  # idempotent: a repeated step writes the same positions


def test_positions_survive_bfloat16_rows():
    rel = torch.tensor([[0, 300, 255], [16000, 1, 129]])
    rows = mp.with_positions(torch.zeros(2, 4, dtype=torch.bfloat16), rel)
    assert torch.equal(mp.split_positions(rows)[1], rel)
    with pytest.raises(ValueError, match="exceeds"):
        mp.encode_positions(torch.tensor([[mp.BASE**2, 0, 0]]), rows)


def test_served_methods():
    assert QWEN25.served_methods() == [
        "divprune", "downsample", "dycoke_ttm", "evs", "pitome", "random", "tome", "uniform",
        "vidcom2", "visionzip_video",
    ]  # fmt: skip
    assert QWEN3.served_methods() == ["divprune", "downsample", "pitome", "random", "tome", "uniform"]


def test_named_methods_get_the_family_defaults_and_requests_change_the_server():
    config = resolve_settings(QWEN25, {"method": "tome", "ratio": 0.5}, None, 4)
    assert config.metric == "projected" and config.ratio == 0.5
    assert resolve_settings(QWEN25, {"method": "tome", "ratio": 0.5}, {"ratio": 0.1}, 4).metric == "projected"
    assert resolve_settings(QWEN25, {"method": "tome"}, {"method": "uniform"}, 4).method == "uniform"


@pytest.mark.parametrize(
    "request_, words",
    [
        ({"ratio": 0.0}, "ratio"),
        ({"method": "nope"}, "nope"),
        ({"method": "globalcom2"}, "globalcom2"),
        ({"method": "fastv"}, "fastv"),
        ({"method": "vidcom2", "allocation": "paper"}, "allocation"),
        ("uniform", "JSON object"),
    ],
)
def test_bad_settings_name_the_field(request_, words):
    with pytest.raises(ValueError, match="mm_processor_kwargs.vtcompress") as err:
        resolve_settings(QWEN25, {"method": "uniform"}, request_, 4, where="mm_processor_kwargs.vtcompress")
    assert words in str(err.value)


def test_a_model_config_without_settings_is_off_and_requests_get_the_family_default():
    server = server_settings(QWEN25, SimpleNamespace())
    assert resolve_settings(QWEN25, server, None, 4).is_off
    config = resolve_settings(QWEN25, server, {"ratio": 0.5}, 4)
    assert (config.method, config.ratio) == ("uniform", 0.5)
    given = server_settings(QWEN25, SimpleNamespace(vtcompress={"method": "tome", "ratio": 0.3}))
    assert resolve_settings(QWEN25, given, None, 4).method == "tome"


def test_media_checks():
    evs = resolve_settings(QWEN25, {"method": "evs"}, None, 4)
    with pytest.raises(ValueError, match="videos only"):
        check_media(evs, QWEN25, images=1, videos=0, where="x")
    check_media(evs, QWEN25, images=0, videos=2, where="x")
    uniform = resolve_settings(QWEN3, {"method": "uniform", "ratio": 0.5}, None, 4)
    with pytest.raises(ValueError, match="images only"):
        check_media(uniform, QWEN3, images=0, videos=1, where="x")
    check_media(uniform.replace(ratio=1.0), QWEN3, images=1, videos=1, where="x")


QWEN3_FRAMES = MRopeFamily("Qwen3-VL", DEFAULTS, videos=True, frame_runs=True)


@pytest.mark.parametrize("method", ["evs", "vidcom2"])
def test_frame_runs_refuse_a_split_over_frames_by_content(method):
    with pytest.raises(ValueError, match=f"mm_processor_kwargs.vtcompress: {method} splits"):
        resolve_settings(QWEN3_FRAMES, {"method": method}, None, 4, where="mm_processor_kwargs.vtcompress")
    assert resolve_settings(QWEN3_FRAMES, {"method": method, "ratio": 1.0}, None, 4).is_off
    assert resolve_settings(QWEN25, {"method": method}, None, 4).method == method  # one run per clip


def test_frame_counts():
    def counts(method, ratio, grid):
        return frame_counts(
            resolve_settings(QWEN3_FRAMES, {"method": method, "ratio": ratio}, None, 4), grid, 2
        )

    assert counts("uniform", 0.1, [3, 8, 8]) == [2, 1, 1]  # max(3, floor(4.8)) split, first frames more
    assert counts("dycoke_ttm", 0.5, [3, 8, 8]) == [16, 8, 0]  # the unpaired last frame dropped
    assert counts("visionzip_video", 0.25, [2, 8, 10]) == [5, 5]
    assert counts("evs", 1.0, [2, 8, 10]) == [20, 20]


def test_counts():
    uniform = resolve_settings(QWEN25, {"method": "uniform", "ratio": 0.25}, None, 4)
    assert image_count(uniform, [1, 14, 18], 2) == 15  # floor(63 / 4)
    assert clip_count(uniform, [4, 8, 10], 2) == 20  # max(4, floor(80 / 4))
    assert clip_count(uniform.replace(ratio=0.01), [4, 8, 10], 2) == 4  # one per frame at least
    evs = resolve_settings(QWEN25, {"method": "evs", "ratio": 0.1}, None, 4)
    assert clip_count(evs, [4, 8, 10], 2) == 20  # frame 0 whole
