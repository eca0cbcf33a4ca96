"""lmms-eval hooks for the offline tasks: build docs from the spec file, prompt, score.

lmms-eval loads this file by path (``!function utils.NAME`` in the task YAMLs), so the generator
next to it is loaded by path as well rather than imported as a package.
"""

from __future__ import annotations

import importlib.util
import re
import string
import sys
from pathlib import Path


def _load_synthetic():
    name = "vtc_offline_synthetic"
    if name in sys.modules:  # every `!function` tag loads this file again; generate from one copy
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("synthetic.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


synthetic = _load_synthetic()


def _load_video_synthetic():
    name = "vtc_offline_video_synthetic"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("video_synthetic.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def build_docs(spec_rows):
    """Replace the spec rows ``{kind, count, seed}`` (a ``datasets.Dataset``) by the samples
    they describe, as a ``datasets.Dataset`` with an Image column."""
    import datasets  # lmms-eval's dependency; the scoring below needs only the standard library

    text = datasets.Value("string")
    features = datasets.Features(
        {
            "question_id": text,
            "kind": text,
            "image": datasets.Image(),
            "question": text,
            "answer": text,
            "question_type": text,
        }
    )
    records = [
        sample.record()
        for row in spec_rows
        for sample in synthetic.generate(row["kind"], int(row["count"]), int(row["seed"]))
    ]
    return datasets.Dataset.from_list(records, features=features)


def doc_to_visual(doc: dict) -> list:
    return [doc["image"].convert("RGB")]


def build_video_docs(spec_rows):
    """The video task's spec rows ``{count, seed}`` -> its samples (clips written as GIFs once,
    ``video`` their paths), as a ``datasets.Dataset``."""
    import datasets

    video = _load_video_synthetic()
    folder = video.default_folder()
    records = [
        sample.record(folder)
        for row in spec_rows
        for sample in video.generate(int(row["count"]), int(row["seed"]))
    ]
    return datasets.Dataset.from_list(records)


def doc_to_visual_video(doc: dict) -> list:
    """A video task's visual: the clip's path (lmms-eval's convention for videos)."""
    return [doc["video"]]


def doc_to_text(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> str:
    kwargs = lmms_eval_specific_kwargs or {}
    return f"{kwargs.get('pre_prompt', '')}{doc['question']}{kwargs.get('post_prompt', '')}"


_NUMBER_WORDS = {word: str(i) for i, word in enumerate(synthetic.NUMBER_WORDS)}
_KEEP = set("$.-")  # money, decimals and dates keep their punctuation


def normalize(text: str) -> str:
    """Lower-case, first line only, punctuation (but ``$ . -`` inside tokens) and articles removed,
    number words as digits, ``colour``/``color`` unified."""
    text = text.strip().split("\n")[0].lower().replace("color", "colour")
    text = "".join(ch if ch not in string.punctuation or ch in _KEEP else " " for ch in text)
    tokens = [tok.strip(".-") or tok for tok in text.split()]
    tokens = [_NUMBER_WORDS.get(tok, tok) for tok in tokens if tok not in ("a", "an", "the")]
    return " ".join(tokens)


def _levenshtein(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def anls(prediction: str, answer: str, threshold: float = 0.5) -> float:
    """Average normalized Levenshtein similarity for one pair (DocVQA's metric, tau = 0.5)."""
    pred, gold = normalize(prediction), normalize(answer)
    if not pred and not gold:
        return 1.0
    similarity = 1.0 - _levenshtein(pred, gold) / max(len(pred), len(gold))
    return similarity if similarity >= threshold else 0.0


def process_results(doc: dict, results: list[str]) -> dict:
    prediction = results[0] if results else ""
    exact = float(normalize(prediction) == normalize(doc["answer"]))
    # "contains": the answer appears as whole words in the reply (lenient, for chatty models).
    contains = float(
        re.search(rf"(^| ){re.escape(normalize(doc['answer']))}( |$)", normalize(prediction)) is not None
    )
    return {"exact_match": exact, "contains": contains, "anls": anls(prediction, doc["answer"])}
