"""What the lmms-eval tests share: the repository's evals scripts as modules, an offline
environment for lmms-eval runs, and generation requests on the synthetic offline tasks."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
OFFLINE_ENV = {
    "OMP_NUM_THREADS": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "CUDA_VISIBLE_DEVICES": "",  # the CPU path, also on a machine with GPUs
}


@functools.cache
def evals_script(relative: str) -> ModuleType:
    """``evals/<relative>`` (not a package) imported as a module, once per test session."""
    path = ROOT / "evals" / relative
    name = "vtc_test_" + relative.replace("/", "_").removesuffix(".py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def sweep_script() -> ModuleType:
    """``evals/sweep.py``."""
    return evals_script("sweep.py")


def synthetic_script() -> ModuleType:
    """``evals/tasks/vtc_offline/synthetic.py``: the offline tasks' samples."""
    return evals_script("tasks/vtc_offline/synthetic.py")


@contextlib.contextmanager
def offline(root: Path) -> Iterator[None]:
    """lmms-eval and vtcompress offline, with their caches under ``root``."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {**OFFLINE_ENV, "HF_HOME": str(root / "hf"), "VTCOMPRESS_CACHE": str(root)}.items():
            mp.setenv(key, value)
        yield


def shape_requests(count: int, max_new_tokens: int = 6):
    """``(task_dict, requests)``: ``count`` greedy generate_until requests on the synthetic
    "shapes" samples, one image each, in task "t", split "test"."""
    from lmms_eval.api.instance import Instance

    docs = [s.record() for s in synthetic_script().generate("shapes", count)]
    gen_kwargs = {"max_new_tokens": max_new_tokens, "temperature": 0, "do_sample": False, "until": ["\n\n"]}
    requests = [
        Instance(
            "generate_until",
            (docs[i]["question"], dict(gen_kwargs), lambda d: [d["image"]], i, "t", "test"),
            idx=0,
            metadata={"task": "t", "doc_id": i, "repeats": 1},
        )
        for i in range(count)
    ]
    return {"t": {"test": docs}}, requests


def loglikelihood_request(doc: dict, continuation: str = " 3"):
    """A loglikelihood request for ``continuation`` after ``doc``'s question and image (doc 0 of
    task "t", split "test")."""
    from lmms_eval.api.instance import Instance

    return Instance(
        "loglikelihood",
        (doc["question"], continuation, lambda d: [d["image"]], 0, "t", "test"),
        idx=0,
        metadata={"task": "t", "doc_id": 0, "repeats": 1},
    )
