"""The offline video task's generator: deterministic clips whose answers live in the right frames.
Needs Pillow only (no lmms-eval)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers.lmms_eval_common import evals_script
from vtcompress.integrations.video_frames import read_clip

video = evals_script("tasks/vtc_offline/video_synthetic.py")
NAMES = {rgb: name for name, rgb in video.COLOURS.items()}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("clips")


def _frames(sample, folder):
    clip = read_clip(sample.save(folder), 64)
    assert clip.total == video.FRAMES  # a GIF writer merges equal frames: the progress bar prevents it
    return [np.asarray(f)[:-2].astype(int) for f in clip.frames]  # the progress bar cut off


def test_generation_is_deterministic_and_varied(folder, tmp_path):
    a, b = video.generate(9, seed=1), video.generate(9, seed=1)
    assert [s.answer for s in a] == [s.answer for s in b]
    assert a[0].save(folder).read_bytes() == b[0].save(tmp_path).read_bytes()
    assert [s.answer for s in a] != [s.answer for s in video.generate(9, seed=2)]
    assert {s.question_type for s in a} == set(video.QUESTION_TYPES)


@pytest.mark.parametrize("index", range(12))
def test_answers_match_the_pixels_of_the_right_frames(index, folder):
    sample = video.video_sample(0, index)
    frames = _frames(sample, folder)
    if sample.question_type == "middle_colour":
        middle = frames[video.FRAMES // 2][5, 5]
        assert NAMES[tuple(middle)] == sample.answer
        stretch = [t for t, f in enumerate(frames) if NAMES.get(tuple(f[5, 5])) == sample.answer]
        assert 3 <= len(stretch) <= 5  # a short middle: frames dropped there lose the answer
    elif sample.question_type == "flash_colour":
        flashed = [t for t, f in enumerate(frames) if (np.abs(f - video.GREY).sum(-1) > 30).any()]
        assert len(flashed) == 1  # one frame only
        pixels = frames[flashed[0]].reshape(-1, 3)
        colours = {NAMES.get(tuple(p)) for p in pixels} - {None}
        assert colours == {sample.answer}
    else:
        # a ball appears at the left edge once per crossing: count where it appears there anew
        left = [bool((np.abs(f[:, :10] - video.GREY).sum(-1) > 30).any()) for f in frames]
        entries = sum(1 for t, here in enumerate(left) if here and (t == 0 or not left[t - 1]))
        assert video.NUMBER_WORDS[entries] == sample.answer


@pytest.mark.parametrize("index", [1, 4, 7])
def test_vidcom2_gives_the_flashing_frame_the_largest_share(index, folder):
    """The task separates methods by frames: on the tiny OneVision (random weights, so the features
    only follow the pixels) VidCom²'s frame-adaptive budget favours the one frame that holds the
    answer, where an even split (uniform) gives it no more than any other frame."""
    import torch

    import vtcompress as vtc
    from tests.helpers.video_inputs import tiny_onevision
    from vtcompress.integrations.llava_onevision.video_inputs import video_inputs

    sample = video.video_sample(0, index)
    assert sample.question_type == "flash_colour"
    frames = _frames(sample, folder)
    (when,) = [t for t, f in enumerate(frames) if (np.abs(f - video.GREY).sum(-1) > 30).any()]
    model, processor = tiny_onevision()
    clip = read_clip(sample.save(folder), video.FRAMES)
    inputs = video_inputs(model.config, processor, clip.frames, sample.question, clip.seconds_between)
    kept = {}
    for method in ("vidcom2", "uniform"):
        with vtc.compressed(model, method, ratio=0.25) as handle, torch.no_grad():
            model(**inputs)
            kept[method] = [view.kept for view in handle.last_stats.images[0].views]
    others = kept["vidcom2"][:when] + kept["vidcom2"][when + 1 :]
    assert kept["vidcom2"][when] > max(others)
    assert kept["uniform"][when] == min(kept["uniform"])
