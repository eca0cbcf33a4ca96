"""Choose, per call, between the Triton kernels and the chunked torch reference.

The Triton path is taken when all of these hold, else the reference runs (same results within
floating-point tolerance, same indices except between tied scores):

- the reference is not forced: :func:`force_reference` (context manager), :func:`set_force_reference`
  (process-wide) or the environment variable ``VTCOMPRESS_FORCE_REFERENCE=1``;
- every tensor argument is on a CUDA device (or, with ``TRITON_INTERPRET=1`` set before triton was
  imported, on the CPU: Triton's interpreter, for debugging and tests);
- every floating-point input is float32, bfloat16 or float16 (others, e.g. float64, use the reference);
- on a GPU, the inputs are half precision (bfloat16, float16): on an H200 the Triton kernels ran
  5-7x faster than the naive torch path in bfloat16 but 4-5x slower in float32 (they compute
  exact float32 products, no TF32, while cuBLAS is faster there), so float32 CUDA tensors take the
  chunked reference, which matched the naive time at a fraction of its memory
  (evals/results/h200/bench_kernels_cuda.txt);
- no input needs a gradient (the kernels have no backward);
- ``k <= MAX_TOPK`` (16) for :func:`cosine_topk`;
- ``triton`` imports (``pip install "vtcompress[kernels]"``).

If a Triton launch raises (an unsupported GPU, a triton version mismatch) the call warns once, runs
the reference instead, and the process stays on the reference from then on.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import warnings
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from types import ModuleType

import torch
from torch import Tensor

from vtcompress.kernels import reference

FORCE_REFERENCE_ENV = "VTCOMPRESS_FORCE_REFERENCE"
MAX_TOPK = 16  # mirrors triton_ops.MAX_TOPK without importing triton
_SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)

_scoped_force: ContextVar[bool | None] = ContextVar("vtcompress_force_reference", default=None)
_process_force = False
_triton_broken = False


def set_force_reference(enabled: bool = True) -> None:
    """Process-wide switch: ``True`` sends every op to the torch reference (overridden inside
    :func:`force_reference` blocks)."""
    global _process_force
    _process_force = bool(enabled)


@contextlib.contextmanager
def force_reference(enabled: bool = True) -> Iterator[None]:
    """Within the block, use the torch reference (``enabled=True``) or allow Triton (``False``),
    whatever the process-wide switch and ``VTCOMPRESS_FORCE_REFERENCE`` say."""
    token = _scoped_force.set(bool(enabled))
    try:
        yield
    finally:
        _scoped_force.reset(token)


def reference_forced() -> bool:
    """Whether the reference path is forced right now (context manager, then switch, then env var)."""
    scoped = _scoped_force.get()
    if scoped is not None:
        return scoped
    if _process_force:
        return True
    return os.environ.get(FORCE_REFERENCE_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


@functools.lru_cache(maxsize=1)
def _triton_module() -> ModuleType | None:
    try:
        return importlib.import_module(f"{__package__}.triton_ops")
    except ImportError:
        return None


def triton_available() -> bool:
    """Whether ``triton`` imports (the ``kernels`` extra is installed)."""
    return _triton_module() is not None


def _on_triton_device(t: Tensor) -> bool:
    if t.is_cuda:
        return True
    # CPU tensors only through the interpreter, which triton picks at import from TRITON_INTERPRET.
    if t.device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1":
        mod = _triton_module()
        return mod is not None and mod.INTERPRETED
    return False


def backend_for(*tensors: Tensor | None, k: int | None = None) -> str:
    """``"triton"`` or ``"reference"``: the path a call with these arguments takes (see module doc)."""
    if reference_forced() or _triton_broken:
        return "reference"
    present = [t for t in tensors if t is not None]
    if k is not None and k > MAX_TOPK:
        return "reference"
    for t in present:
        if t.is_floating_point() and t.dtype not in _SUPPORTED_DTYPES:
            return "reference"
    if torch.is_grad_enabled() and any(t.requires_grad for t in present):
        return "reference"
    if not present or not all(_on_triton_device(t) for t in present):
        return "reference"
    if len({t.device for t in present}) != 1:
        return "reference"  # let torch raise its usual device-mismatch error
    if any(t.is_cuda and t.dtype == torch.float32 for t in present):
        return "reference"  # measured faster on GPUs (module docstring)
    if not triton_available():
        _warn_missing_triton()
        return "reference"
    return "triton"


@functools.lru_cache(maxsize=1)
def _warn_missing_triton() -> None:
    from vtcompress.hints import install_command

    warnings.warn(
        "triton is not installed, so vtcompress.kernels runs its torch reference on CUDA tensors; "
        f"{install_command('kernels')} for the Triton kernels.",
        RuntimeWarning,
        stacklevel=4,
    )


def _run(name: str, triton_call: Callable[[ModuleType], object], reference_call: Callable[[], object]):
    global _triton_broken
    try:
        return triton_call(_triton_module())
    except Exception as err:  # noqa: BLE001 - any launch failure falls back, loudly, once
        _triton_broken = True
        warnings.warn(
            f"vtcompress.kernels: the Triton {name} failed ({type(err).__name__}: {err}); using the torch "
            f"reference for the rest of this process (set {FORCE_REFERENCE_ENV}=1 to skip Triton).",
            RuntimeWarning,
            stacklevel=3,
        )
        return reference_call()


def cls_attention_logits(
    q_cls: Tensor, keys: Tensor, scale: float, *, chunk_size: int | None = None
) -> Tensor:
    """Pre-softmax attention logits of the [CLS] query against every key.

    Args:
        q_cls: [B, H, dh] query of token 0 per head.
        keys: [B, T, H, dh] keys of all tokens (token 0 included).
        scale: softmax scale of the layer (dh ** -0.5).
        chunk_size: keys per block on the reference path.
    Returns:
        [B, H, T] float32 logits ``scale * q . k``.
    """
    reference.check_qk(q_cls, keys)

    def ref() -> Tensor:
        return reference.cls_attention_logits(q_cls, keys, scale, chunk_size=chunk_size)

    if backend_for(q_cls, keys) == "triton":
        return _run("cls_attention_logits", lambda m: m.cls_attention_logits(q_cls, keys, scale), ref)
    return ref()


def cosine_topk(
    a: Tensor,
    b: Tensor,
    k: int = 1,
    mask_a: Tensor | None = None,
    mask_b: Tensor | None = None,
    *,
    chunk_size: int | None = None,
) -> tuple[Tensor, Tensor]:
    """For each row of ``a``, the ``k`` most cosine-similar rows of ``b``, without the [Na, Nb] matrix.

    Args:
        a: [B, Na, D]; b: [B, Nb, D].
        k: neighbours per row, ``1 <= k <= Nb`` (Triton handles ``k <= 16``; larger k uses the reference).
        mask_a: optional bool [B, Na]; False rows get score -inf and index 0.
        mask_b: optional bool [B, Nb]; False columns are never chosen (a row with fewer than ``k``
            valid columns gets -inf scores at its tail, with arbitrary in-range indices there).
        chunk_size: rows of ``a`` per block on the reference path.
    Returns:
        scores [B, Na, k] float32 (descending), indices long [B, Na, k].
    """
    reference.check_pair(a, b, k, mask_a, mask_b)

    def ref() -> tuple[Tensor, Tensor]:
        return reference.cosine_topk(a, b, k, mask_a, mask_b, chunk_size=chunk_size)

    if backend_for(a, b, mask_a, mask_b, k=k) == "triton":
        return _run("cosine_topk", lambda m: m.cosine_topk(a, b, k, mask_a, mask_b), ref)
    return ref()


def energy_score(
    x: Tensor,
    margin: float,
    temperature: float = 1.0,
    mask: Tensor | None = None,
    *,
    chunk_size: int | None = None,
) -> Tensor:
    """PiToMe energy: ``E_i = mean_j ELU((cos(x_i, x_j) - margin) / temperature)``, j over valid tokens.

    Args:
        x: [B, N, D]; mask: optional bool [B, N] of valid tokens (invalid rows get -inf).
        chunk_size: rows per block on the reference path.
    Returns:
        [B, N] float32.
    """
    reference.check_tokens(x, mask)

    def ref() -> Tensor:
        return reference.energy_score(x, margin, temperature, mask, chunk_size=chunk_size)

    if backend_for(x, mask) == "triton":
        return _run("energy_score", lambda m: m.energy_score(x, margin, temperature, mask), ref)
    return ref()


def redundancy_count(
    x: Tensor, threshold: float, mask: Tensor | None = None, *, chunk_size: int | None = None
) -> Tensor:
    """Per token, how many OTHER valid tokens have cosine similarity above ``threshold``.

    Args:
        x: [B, N, D]; mask: optional bool [B, N] (invalid tokens neither count nor are counted: 0).
        chunk_size: rows per block on the reference path.
    Returns:
        long [B, N].
    """
    reference.check_tokens(x, mask)

    def ref() -> Tensor:
        return reference.redundancy_count(x, threshold, mask, chunk_size=chunk_size)

    if backend_for(x, mask) == "triton":
        return _run("redundancy_count", lambda m: m.redundancy_count(x, threshold, mask), ref)
    return ref()
