"""Offline tasks (generated images with known answers), their scoring, and the plugin's records.

None of this needs lmms-eval: the generator needs Pillow, the scoring the standard library.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections import deque
from pathlib import Path

import numpy as np
import pytest

TASK_DIR = Path(__file__).resolve().parents[2] / "evals" / "tasks" / "vtc_offline"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"test_vtc_{name}", TASK_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


synthetic = _load("synthetic")
utils = _load("utils")


def _components(image, background) -> list[tuple[int, int, int]]:
    """Connected non-background blobs of a half-resolution copy; each blob's most common colour."""
    pixels = np.asarray(image.convert("RGB"))[::2, ::2].astype(int)
    mask = np.abs(pixels - np.array(background)).sum(-1) > 30
    seen = np.zeros_like(mask)
    blobs = []
    for y, x in zip(*np.nonzero(mask)):
        if seen[y, x]:
            continue
        queue, members = deque([(y, x)]), []
        seen[y, x] = True
        while queue:
            cy, cx = queue.popleft()
            members.append(pixels[cy, cx])
            for ny, nx in ((cy + 1, cx), (cy - 1, cx), (cy, cx + 1), (cy, cx - 1)):
                if 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1] and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    queue.append((ny, nx))
        colours, counts = np.unique(np.array(members), axis=0, return_counts=True)
        fill = colours[np.argmax(counts)]
        blobs.append(tuple(int(c) for c in fill))
    return blobs


def test_generation_is_deterministic_and_varied():
    a, b = synthetic.generate("shapes", 10, seed=3), synthetic.generate("shapes", 10, seed=3)
    assert [s.question for s in a] == [s.question for s in b]
    assert all(np.array_equal(np.asarray(x.image), np.asarray(y.image)) for x, y in zip(a, b))
    other = synthetic.generate("shapes", 10, seed=4)
    assert [s.answer for s in a] != [s.answer for s in other]
    sizes = {s.image.size for s in a}
    assert len(sizes) >= 3  # several aspect ratios, so AnyRes picks several crop grids


@pytest.mark.parametrize("index", range(15))
def test_shape_answers_match_the_pixels(index):
    sample = synthetic.shapes_sample(0, index)
    blobs = _components(sample.image, (245, 245, 240))
    names = {rgb: name for name, rgb in synthetic.COLOURS.items()}
    colours = [names.get(fill) for fill in blobs]
    assert None not in colours, "every blob is filled with one of the named colours"
    if sample.question_type == "count_all":
        assert int(sample.answer) == len(blobs)
    elif sample.question_type == "count_colour":
        colour = sample.question.split()[2]
        assert int(sample.answer) == colours.count(colour)
    elif sample.question_type == "colour_of_shape":
        assert sample.answer in colours
    elif sample.question_type == "shape_of_colour":
        assert colours.count(sample.question.split()[4]) == 1
    elif sample.answer == "yes":
        assert sample.question.split()[3] in colours


def test_document_answers_are_consistent():
    for sample in synthetic.generate("document", 10):
        assert sample.answer and sample.question.endswith("?")
        if sample.question_type == "total":
            assert sample.answer.startswith("$") and float(sample.answer[1:]) > 0
        if sample.question_type == "date":
            assert len(sample.answer) == 10 and sample.answer.startswith("2024-")


def test_export_writes_images_and_index(tmp_path):
    out = synthetic.export(tmp_path, count=2)
    lines = (out / "samples.jsonl").read_text().splitlines()
    assert len(lines) == 4 and len(list(out.glob("*.png"))) == 4


@pytest.mark.parametrize(
    ("prediction", "answer", "exact", "contains", "anls"),
    [
        ("Three.", "3", 1.0, 1.0, 1.0),
        # "there are 3 shapes" vs "3": 17 edits over 18 characters, below the 0.5 threshold
        ("There are 3 shapes", "3", 0.0, 1.0, 0.0),
        ("The colour is Red", "red", 0.0, 1.0, 0.0),
        ("$679.20", "$679.20", 1.0, 1.0, 1.0),
        ("2024-11-17", "2024-11-17", 1.0, 1.0, 1.0),
        ("triangle\nbecause it is orange", "triangle", 1.0, 1.0, 1.0),
        ("", "yes", 0.0, 0.0, 0.0),
        ("no", "yes", 0.0, 0.0, 0.0),
        # a near miss: one deletion in 12 characters scores 11/12, not 0 and not 1
        ("Emil Schmit", "Emil Schmidt", 0.0, 0.0, 11 / 12),
        ("2024-11-18", "2024-11-17", 0.0, 0.0, 0.9),
    ],
)
def test_scoring(prediction, answer, exact, contains, anls):
    scores = utils.process_results({"answer": answer}, [prediction])
    assert scores["exact_match"] == exact
    assert scores["contains"] == contains
    assert scores["anls"] == pytest.approx(anls)


def test_anls_threshold():
    assert utils.anls("Emil Schmidt", "Emil Schmidt") == 1.0
    assert utils.anls("Emil Schmit", "Emil Schmidt") == pytest.approx(1 - 1 / 12)
    assert utils.anls("Alice", "Emil Schmidt") == 0.0


def test_sample_record_sums_images():
    from vtcompress.integrations.lmms_eval.records import BatchTiming, sample_record

    images = [
        {"tokens_before": 1152, "tokens_kept": 288, "newlines_kept": 24},
        {"tokens_before": 576, "tokens_kept": 144, "newlines_kept": 24},
    ]
    record = sample_record(
        method="globalcom2",
        ratio=0.25,
        images=images,
        prompt_tokens_before=1800,
        prompt_tokens_after=504,
        prefill_flops_before=2.0,
        prefill_flops_after=1.0,
        output_tokens=3,
        timing=BatchTiming(batch_size=2, prefill_seconds=0.5),
    )
    assert (record["visual_tokens_before"], record["visual_tokens_kept"]) == (1728, 432)
    assert record["kept_fraction"] == 0.25 and record["newline_tokens_kept"] == 48
    assert record["timing"]["batch_size"] == 2


@pytest.mark.slow  # a fresh interpreter imports torch and transformers
def test_vtcompress_imports_without_lmms_eval():
    code = (
        "import sys; sys.modules['lmms_eval'] = None\n"  # make `import lmms_eval` fail
        "import vtcompress, vtcompress.integrations.lmms_eval as p\n"
        "assert 'vtcompress_llava_next' in p.model_ids(), p.model_ids()\n"
        "try:\n"
        "    import vtcompress.integrations.lmms_eval.model\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "the lmms-eval plugin needs lmms-eval: pip install -e " in out.stdout  # from this checkout
    assert '[eval]"' in out.stdout
