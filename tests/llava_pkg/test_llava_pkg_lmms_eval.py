"""``vtcompress_llava`` end to end: the real ``lmms-eval`` command line on a tiny llava-format
checkpoint and the offline tasks. lmms-eval exits 0 even when generation failed, so every
assertion reads the answers, scores and records it wrote, never its exit code.

Runs in ``.venv-llava`` built with lmms-eval (``.ci/llava-setup.sh``); skips elsewhere.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("llava.model.language_model.llava_llama")
pytest.importorskip("lmms_eval")

import tiny_llava  # noqa: E402  (tests/llava_pkg/tiny_llava.py)
import torch  # noqa: E402
from llava.constants import DEFAULT_IMAGE_TOKEN  # noqa: E402
from llava.conversation import conv_templates  # noqa: E402
from llava.mm_utils import get_model_name_from_path, process_images, tokenizer_image_token  # noqa: E402
from llava.model.builder import load_pretrained_model  # noqa: E402

import vtcompress as vtc  # noqa: E402
from tests.helpers.lmms_eval_common import ROOT, synthetic_script  # noqa: E402
from vtcompress.budget import keep_count  # noqa: E402
from vtcompress.integrations.llava_pkg.compat import patch_generate  # noqa: E402
from vtcompress.integrations.llava_pkg.layout import LlavaPackageLayout  # noqa: E402
from vtcompress.integrations.llava_pkg.tiny import PINPOINTS  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore")]
TASKS = {"vtc_document_qa": "document", "vtc_shapes_qa": "shapes"}
LIMIT = 3
POST_PROMPT = "\nAnswer the question using a single word or phrase."
RUNS = {
    "globalcom2": dict(method="globalcom2", ratio=0.25, batch_size=2),
    "off": dict(ratio=1.0, batch_size=1),
}


synthetic = synthetic_script()


def _max_new_tokens(task: str) -> int:
    """The task's max_new_tokens (its own yaml, else the shared template)."""
    folder = ROOT / "evals" / "tasks" / "vtc_offline"
    for path in (folder / f"{task}.yaml", folder / "_default_template_vtc_offline_yaml"):
        found = re.search(r"max_new_tokens: (\d+)", path.read_text())
        if found:
            return int(found.group(1))
    raise AssertionError(f"no max_new_tokens for {task}")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("lmms_eval_llava")
    checkpoint = tiny_llava.checkpoint(True)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(root / "hf"),
        "TOKENIZERS_PARALLELISM": "false",
        "CUDA_VISIBLE_DEVICES": "",
    }
    out = {}
    for name, args in RUNS.items():
        model_args = ",".join(
            [f"pretrained={checkpoint}", "device=cpu", "device_map=auto", "conv_template=vicuna_v1"]
            + [f"{k}={v}" for k, v in args.items()]
        )
        cmd = [sys.executable, "-m", "lmms_eval", "--model", "vtcompress_llava", "--model_args", model_args]
        cmd += ["--tasks", ",".join(TASKS), "--include_path", str(ROOT / "evals" / "tasks" / "vtc_offline")]
        cmd += ["--limit", str(LIMIT), "--log_samples", "--output_path", str(root / name)]
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
        results = sorted((root / name).rglob("*_results.json"))
        assert results, (
            f"lmms-eval wrote no results for {name}:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
        )
        out[name] = results[-1].parent
    return out


def _samples(run_dir: Path, task: str) -> list[dict]:
    (path,) = run_dir.glob(f"*_samples_{task}.jsonl")
    return sorted((json.loads(line) for line in path.read_text().splitlines()), key=lambda s: s["doc_id"])


def _answer(sample: dict) -> str:
    answer = sample["filtered_resps"]
    while isinstance(answer, list):
        answer = answer[0]
    return answer


@torch.no_grad()
def _reference_answers(method: str | None, ratio: float) -> dict[str, list[str]]:
    """What lmms-eval's llava model computes for each sample, one at a time, in this process."""
    path = str(tiny_llava.checkpoint(True))
    tokenizer, model, processor, _ = load_pretrained_model(
        path, None, get_model_name_from_path(path), device_map="cpu", device="cpu"
    )
    patch_generate(model)
    handle = vtc.compress(model, method, ratio=ratio) if method else None
    answers = {}
    for task, kind in TASKS.items():
        answers[task] = []
        for sample in synthetic.generate(kind, LIMIT):
            conv = conv_templates["vicuna_v1"].copy()
            conv.append_message(conv.roles[0], DEFAULT_IMAGE_TOKEN + "\n" + sample.question + POST_PROMPT)
            conv.append_message(conv.roles[1], None)
            ids = tokenizer_image_token(conv.get_prompt(), tokenizer, return_tensors="pt")[None]
            image = sample.image.convert("RGB")
            pixels = process_images([image], processor, model.config)
            pixels = [p.half() for p in pixels] if isinstance(pixels, list) else pixels.half()
            out = model.generate(
                ids, attention_mask=ids.ne(tokenizer.eos_token_id), pad_token_id=tokenizer.eos_token_id,
                images=pixels,
                image_sizes=[image.size], do_sample=False, temperature=0, top_p=1.0, num_beams=1,
                max_new_tokens=_max_new_tokens(task), use_cache=True,
            )  # fmt: skip
            answers[task].append(tokenizer.batch_decode(out, skip_special_tokens=True)[0])
    if handle is not None:
        handle.remove()
    return answers


def test_answers_equal_the_llava_package_run_directly(runs):
    """Uncompressed: the answers lmms-eval logged are the llava package's own greedy answers."""
    expected = _reference_answers(None, 1.0)
    for task in TASKS:
        assert [_answer(s) for s in _samples(runs["off"], task)] == expected[task]


def test_compressed_answers_and_scores(runs):
    expected = _reference_answers("globalcom2", 0.25)
    for task in TASKS:
        (results_file,) = runs["globalcom2"].glob("*_results.json")
        scores = json.loads(results_file.read_text())["results"][task]
        assert isinstance(scores["exact_match,none"], float) and isinstance(scores["anls,none"], float)
        samples = _samples(runs["globalcom2"], task)
        assert len(samples) == LIMIT
        # batched (left-padded, float16) vs one by one: the same greedy answers
        assert [_answer(s) for s in samples] == expected[task]


@pytest.mark.parametrize("run", list(RUNS))
def test_records_follow_the_rule(runs, run):
    ratio = RUNS[run]["ratio"]
    for task, kind in TASKS.items():
        for sample in _samples(runs[run], task):
            counts = sample["token_counts"][0]
            record = counts["vtcompress"]
            assert record["ratio"] == ratio and record["method"] == RUNS[run].get("method", "globalcom2")
            assert counts["input_tokens"] == record["prompt_tokens_after"]
            (image,) = record["images"]
            width, height = synthetic.generate(kind, LIMIT)[sample["doc_id"]].image.size
            assert image["image_size"] == [height, width]
            layout = LlavaPackageLayout.for_image((width, height), PINPOINTS, 112, 14)
            assert image["tokens_before"] == layout.num_tokens()
            assert image["tokens_kept"] == keep_count(layout.num_tokens(), ratio)
            assert sum(image["views_kept"]) == image["tokens_kept"]
            removed = (image["tokens_before"] - image["tokens_kept"]) + (
                image["newlines_before"] - image["newlines_kept"]
            )
            assert record["prompt_tokens_before"] - record["prompt_tokens_after"] == removed
            if ratio < 1.0:
                assert removed > 0 and record["prefill_flops_after"] < record["prefill_flops_before"]
            else:
                assert removed == 0 and record["prefill_flops_after"] == record["prefill_flops_before"]
            assert 0 < record["timing"]["prefill_seconds"] <= record["timing"]["generate_seconds"]
