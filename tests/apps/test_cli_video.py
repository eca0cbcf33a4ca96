"""``vtcompress run --video FILE`` / ``--example clip``: frames sampled uniformly, the model's video
inputs built without the video processor, per-frame token counts, one-line errors."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from PIL import Image

from vtcompress.integrations.cli import main
from vtcompress.integrations.examples import example
from vtcompress.integrations.video_frames import read_clip, uniform_indices

FAST = ["--max-new-tokens", "1", "--repeats", "1", "--warmup", "0"]
CLIP = example("clip")
GREEN = (40, 170, 60)  # the clip's background in frames 5-10 (scripts/make_video_example.py)


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    torch.set_num_threads(1)


def test_uniform_sampling_keeps_both_ends_and_every_frame_of_a_short_clip():
    assert uniform_indices(16, 4) == [0, 5, 10, 15]
    assert uniform_indices(100, 3) == [0, 49, 99]
    assert uniform_indices(5, 32) == [0, 1, 2, 3, 4]
    assert uniform_indices(7, 1) == [0]
    with pytest.raises(ValueError, match="cannot sample"):
        uniform_indices(0, 4)


def test_the_bundled_clip_is_small_and_its_middle_is_green():
    assert CLIP.path.stat().st_size < 10_000
    clip = read_clip(CLIP.path, 32)
    assert (len(clip.frames), clip.total) == (16, 16)
    assert clip.frames[0].getpixel((1, 1)) == (200, 40, 40)
    assert clip.frames[8].getpixel((1, 1)) == GREEN
    assert clip.frames[15].getpixel((1, 1)) == (40, 70, 200)
    sampled = read_clip(CLIP.path, 3)
    assert sampled.indices == [0, 7, 15] and sampled.frames[1].getpixel((1, 1)) == GREEN


def test_an_mp4_is_decoded_with_pyav_and_sampled(tmp_path):
    av = pytest.importorskip("av")
    path = tmp_path / "ramp.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(20):
            frame = np.full((48, 64, 3), (i * 12, 100, 50), np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    clip = read_clip(path, 5)
    assert clip.indices == [0, 4, 9, 14, 19] and clip.total == 20 and clip.fps == 10
    assert clip.seconds_between == pytest.approx(19 / 4 / 10)
    reds = [clip.frames[k].getpixel((32, 24))[0] for k in range(5)]
    assert all(abs(r - i * 12) <= 8 for r, i in zip(reds, clip.indices)), reds


def test_without_pyav_the_error_names_the_pip_command(tmp_path, monkeypatch):
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"\0" * 16)
    monkeypatch.setitem(sys.modules, "av", None)
    with pytest.raises(ImportError, match=r"pip install 'vtcompress\[video\]'"):
        read_clip(path, 4)


def test_qwen_frames_are_patched_like_the_image_processor():
    """A still image is two equal frames to the image processor: the same patches, same order."""
    from vtcompress.integrations.qwen2_5_vl.tiny import build_tiny_qwen2_5_vl
    from vtcompress.integrations.qwen2_5_vl.video_inputs import clip_pixels

    _, processor = build_tiny_qwen2_5_vl(seed=0)
    ip = processor.image_processor
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (140, 196, 3), dtype=np.uint8))
    ref = ip(images=[image], return_tensors="pt")
    pixels, grid = clip_pixels(
        [image, image], ip, min_pixels=ip.size.shortest_edge, max_pixels=ip.size.longest_edge
    )
    assert grid == tuple(ref["image_grid_thw"][0].tolist())
    torch.testing.assert_close(pixels, ref["pixel_values"], atol=1e-5, rtol=0)


def test_qwen_odd_frame_counts_repeat_the_last_frame_and_place_video_tokens():
    from vtcompress.integrations.qwen2_5_vl.tiny import build_tiny_qwen2_5_vl
    from vtcompress.integrations.qwen2_5_vl.video_inputs import video_inputs

    model, processor = build_tiny_qwen2_5_vl(seed=0)
    clip = read_clip(CLIP.path, 5)
    inputs = video_inputs(model.config, processor, clip.frames, "Which colour?", clip.seconds_between)
    t, h, w = inputs["video_grid_thw"][0].tolist()
    assert t == 3
    assert int((inputs["input_ids"] == model.config.video_token_id).sum()) == t * h * w // 4
    assert inputs["mm_token_type_ids"].sum() == 2 * t * h * w // 4
    assert inputs["second_per_grid_ts"].item() == pytest.approx(2 * clip.seconds_between)
    steps = inputs["pixel_values_videos"].reshape(t, h * w, 3, 2, 14, 14)
    torch.testing.assert_close(steps[2, :, :, 0], steps[2, :, :, 1])  # frame 5 = frame 4 repeated
    assert not torch.equal(steps[1, :, :, 0], steps[1, :, :, 1])  # frames 2 and 3 differ (the ball)


def test_onevision_inputs_have_one_run_of_video_tokens_per_clip():
    from tests.helpers.video_inputs import tiny_onevision
    from vtcompress.integrations.llava_onevision.video_inputs import video_inputs

    model, processor = tiny_onevision()
    clip = read_clip(CLIP.path, 4)
    inputs = video_inputs(model.config, processor, clip.frames, "Which colour?", clip.seconds_between)
    assert inputs["pixel_values_videos"].shape == (1, 4, 3, 384, 384)
    video_id = model.config.video_token_index
    assert int((inputs["input_ids"] == video_id).sum()) == 4 * 196 + 1
    # A red frame and a green one differ in the red channel, normalised alike.
    red = inputs["pixel_values_videos"][0, :, 0, 5, 5]
    assert red[0] > red[2]


def test_run_example_clip_prints_frames_and_tokens_per_frame(capsys):
    assert main(["run", "--example", "clip", "--frames", "4", *FAST]) == 0
    out = capsys.readouterr().out
    assert "model tiny-onevision, vidcom2, ratio 0.25" in out
    assert "frames: 4 of 16 sampled uniformly (indices 0, 5, 10, 15)" in out
    assert "visual tokens, vidcom2 at ratio 0.25: 784 -> 196 (25.0% kept)" in out
    rows = [line.split() for line in out.splitlines() if line.startswith("  frame ")]
    assert [r[1] for r in rows] == ["0", "1", "2", "3"]
    assert all(r[2] == "196" for r in rows) and sum(int(r[4]) for r in rows) == 196
    assert ["newline", "1", "->", "1"] in [line.split() for line in out.splitlines()]


def test_run_video_on_qwen_counts_time_steps(capsys):
    """6 frames of 128x96 px: upscaled to the video processor's minimum of 128 * 28^2 px, 392x280
    px, 14 x 10 merged tokens; 3 time steps; vidcom2's exact allocation keeps floor(0.25 * 420)."""
    assert main(["run", "--video", str(CLIP.path), "--model", "tiny-qwen2.5-vl", "--frames", "6", *FAST]) == 0
    out = capsys.readouterr().out
    assert "the model sees 3 time steps of 2 frames" in out
    rows = [line.split() for line in out.splitlines() if line.startswith("  frame ")]
    assert [int(r[2]) for r in rows] == [140, 140, 140]
    assert sum(int(r[4]) for r in rows) == 105
    assert "visual tokens, vidcom2 at ratio 0.25: 420 -> 105" in out


def test_ratio_one_keeps_every_token(capsys):
    assert main(["run", "--example", "clip", "--frames", "2", "--ratio", "1.0", *FAST]) == 0
    assert "compression off (ratio 1.0): 392 -> 392 (100.0% kept)" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--frames", "3"], "--frames 3: frames are sampled from a video; give --video FILE"),
        (["--video", "/no/such.mp4"], "--video /no/such.mp4: no such file"),
        (["--example", "clip", "--model", "tiny"], "takes no videos on LLaVA-NeXT; use a model of"),
        (["--example", "clip", "--question", " "], "--question is empty"),
    ],
)
def test_bad_video_command_lines_are_one_line_exit_2(argv, message, capsys):
    assert main(["run", *argv, *FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


def test_video_and_image_are_exclusive(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--video", str(CLIP.path), "--image", str(example("scene").path)])
    assert exit_.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_qwen_frames_follow_the_checkpoints_video_pixel_limits():
    """A processor that carries a video processor (loaded where torchvision is) sets the limits."""
    from types import SimpleNamespace

    from vtcompress.integrations.qwen2_5_vl.tiny import build_tiny_qwen2_5_vl
    from vtcompress.integrations.qwen2_5_vl.video_inputs import (
        VIDEO_MAX_PIXELS,
        VIDEO_MIN_PIXELS,
        video_inputs,
        video_pixel_limits,
    )

    model, processor = build_tiny_qwen2_5_vl(seed=0)
    assert video_pixel_limits(processor) == (VIDEO_MIN_PIXELS, VIDEO_MAX_PIXELS)
    small = SimpleNamespace(
        tokenizer=processor.tokenizer,
        image_processor=processor.image_processor,
        chat_template=processor.chat_template,
        apply_chat_template=processor.apply_chat_template,
        video_processor=SimpleNamespace(
            size=SimpleNamespace(shortest_edge=28 * 28, longest_edge=28 * 28 * 4)
        ),
    )
    clip = read_clip(CLIP.path, 2)
    inputs = video_inputs(model.config, small, clip.frames, "What?", clip.seconds_between)
    t, h, w = inputs["video_grid_thw"][0].tolist()
    assert t == 1 and h * w * 14 * 14 <= 28 * 28 * 4  # 128x96 px shrunk into 4 merged tokens' area


def test_qwen3_frames_are_patched_like_the_image_processor():
    """A still image is two equal frames to the image processor: the same patches, same order
    (the clip's pixel limits count both frames)."""
    from tests.conftest import tiny_qwen3_vl
    from vtcompress.integrations.qwen3_vl.video_inputs import clip_pixels

    _, processor = tiny_qwen3_vl()
    ip = processor.image_processor
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 420, 3), dtype=np.uint8))
    ref = ip(images=[image], return_tensors="pt")
    limits = 2 * ip.size.shortest_edge, 2 * ip.size.longest_edge
    pixels, grid = clip_pixels([image, image], ip, *limits)
    assert grid == tuple(ref["image_grid_thw"][0].tolist())
    torch.testing.assert_close(pixels, ref["pixel_values"], atol=1e-5, rtol=0)


def test_qwen3_inputs_give_every_time_step_its_timestamp_and_run():
    """5 frames 0.5 s apart: 3 temporal patches (the last repeats frame 4) at 0.25, 1.25 and 2.0 s
    (each the mean of its two frames' times), each its own run of video placeholders."""
    from tests.conftest import tiny_qwen3_vl
    from vtcompress.integrations.qwen3_vl.video_inputs import video_inputs

    model, processor = tiny_qwen3_vl()
    clip = read_clip(CLIP.path, 5)
    inputs = video_inputs(model.config, processor, clip.frames, "Which colour?", 0.5)
    t, h, w = inputs["video_grid_thw"][0].tolist()
    # 5 x 128x96 px is under the clip minimum of 128 * 32^2 px: scaled by sqrt(131072 / (5 * 96 *
    # 128)) = 1.46 and rounded up to 32 px, 192x160 px: 10 x 12 patches, 5 x 6 merged tokens.
    assert (t, h, w) == (3, 10, 12)
    run = "<|vision_start|>" + "<|video_pad|>" * 30 + "<|vision_end|>"
    text = processor.tokenizer.decode(inputs["input_ids"][0])
    assert f"<0.2 seconds>{run}<1.2 seconds>{run}<2.0 seconds>{run}Which colour?" in text
    assert text.count("<|vision_start|>") == 3 and "<|image_pad|>" not in text
    assert torch.equal(inputs["mm_token_type_ids"], (inputs["input_ids"] == model.config.video_token_id) * 2)
    steps = inputs["pixel_values_videos"].reshape(t, h * w, 3, 2, 16, 16)
    torch.testing.assert_close(steps[2, :, :, 0], steps[2, :, :, 1])  # frame 5 = frame 4 repeated
    assert not torch.equal(steps[1, :, :, 0], steps[1, :, :, 1])


def test_run_video_on_qwen3_counts_time_steps(capsys):
    """6 frames of 128x96 px: the clip is upscaled to Qwen3-VL's video minimum of 128 * 32^2 px
    over all frames, 192x128 px, 6 x 4 merged tokens per time step; vidcom2's exact allocation
    keeps floor(0.25 * 72) = 18."""
    assert main(["run", "--video", str(CLIP.path), "--model", "tiny-qwen3-vl", "--frames", "6", *FAST]) == 0
    out = capsys.readouterr().out
    assert "the model sees 3 time steps of 2 frames" in out
    rows = [line.split() for line in out.splitlines() if line.startswith("  frame ")]
    assert [int(r[2]) for r in rows] == [24, 24, 24]
    assert sum(int(r[4]) for r in rows) == 18
    assert "visual tokens, vidcom2 at ratio 0.25: 72 -> 18" in out
