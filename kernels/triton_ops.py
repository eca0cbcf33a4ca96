"""Triton kernels for the compression ops (CUDA tensors; CPU tensors under ``TRITON_INTERPRET=1``).

Importing this module imports ``triton`` (``pip install "vtcompress[kernels]"``); the dispatching ops in
:mod:`vtcompress.kernels` import it lazily, so ``import vtcompress`` never needs it.

Every similarity kernel walks the [Na, Nb] cosine matrix tile by tile (BLOCK_M rows x BLOCK_N columns,
the feature dimension in BLOCK_K slices) and reduces each tile at once, so only the [B, Na, k] /
[B, N] results are written: no N x N matrix, O(N) extra memory. Inputs may be float32, bfloat16 or
float16; products are accumulated in float32 (float32 inputs use IEEE float32 dots, never TF32, to
match the torch reference). A first small kernel writes each row's inverse norm (one float per
token); the tiles scale raw dot products by them, so the inputs are never normalised into a copy.

Top-k keeps, per row, a running list of the ``k`` best (score, column) pairs in registers. Each tile is
merged into it in ``k`` rounds of "tile max beats the list's min"; columns arrive in increasing
order and every choice prefers the lower column on equal scores, so ties resolve to the lowest
index. The register list limits ``k`` to :data:`MAX_TOPK`; the dispatcher uses the torch reference
above it.
"""

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl
from torch import Tensor

MAX_TOPK = 16
"""Largest ``k`` the Triton top-k kernel handles (the running list lives in registers)."""

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)

_NEG_INF = tl.constexpr(float("-inf"))
_POS_INF = tl.constexpr(float("inf"))


@triton.jit
def _inv_norm_kernel(
    x_ptr,
    out_ptr,
    n,
    d,
    stride_xb,
    stride_xn,
    stride_xd,
    BLOCK_R: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """out[b, i] = 1 / max(||x[b, i]||, 1e-12) in float32 (F.normalize's eps: a zero row has cosine 0)."""
    pid = tl.program_id(0)
    bid = tl.program_id(1).to(tl.int64)
    rows = pid * BLOCK_R + tl.arange(0, BLOCK_R)
    row_ok = rows < n
    sq = tl.zeros((BLOCK_R,), dtype=tl.float32)
    for d0 in range(0, d, BLOCK_D):
        ds = d0 + tl.arange(0, BLOCK_D)
        x = tl.load(
            x_ptr + bid * stride_xb + rows[:, None] * stride_xn + ds[None, :] * stride_xd,
            mask=row_ok[:, None] & (ds[None, :] < d),
            other=0.0,
        ).to(tl.float32)
        sq += tl.sum(x * x, axis=1)
    tl.store(out_ptr + bid * n + rows, 1.0 / tl.maximum(tl.sqrt(sq), 1e-12), mask=row_ok)


@triton.jit
def _cos_tile(
    a_ptr,
    b_ptr,
    inv_a,
    inv_b,
    rows,
    cols,
    n_a,
    n_b,
    d,
    stride_an,
    stride_ad,
    stride_bn,
    stride_bd,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
):
    """[BLOCK_M, BLOCK_N] float32 cosine similarities of rows of ``a`` against columns (rows of ``b``).

    ``inv_a`` [BLOCK_M] and ``inv_b`` [BLOCK_N] are the rows' inverse norms (from _inv_norm_kernel).
    """
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    row_ok = rows < n_a
    col_ok = cols < n_b
    for d0 in range(0, d, BLOCK_K):
        ks = d0 + tl.arange(0, BLOCK_K)
        k_ok = ks < d
        a_t = tl.load(
            a_ptr + rows[:, None] * stride_an + ks[None, :] * stride_ad,
            mask=row_ok[:, None] & k_ok[None, :],
            other=0.0,
        )  # [BLOCK_M, BLOCK_K]
        b_t = tl.load(
            b_ptr + cols[None, :] * stride_bn + ks[:, None] * stride_bd,
            mask=col_ok[None, :] & k_ok[:, None],
            other=0.0,
        )  # [BLOCK_K, BLOCK_N]
        if UPCAST:
            acc = tl.dot(a_t.to(tl.float32), b_t.to(tl.float32), acc, input_precision="ieee")
        else:
            acc = tl.dot(a_t, b_t, acc, input_precision=DOT_PRECISION)
    return acc * inv_a[:, None] * inv_b[None, :]


@triton.jit
def _cosine_topk_kernel(
    a_ptr,
    b_ptr,
    inv_a_ptr,
    inv_b_ptr,
    mask_a_ptr,
    mask_b_ptr,
    out_s_ptr,
    out_i_ptr,
    n_a,
    n_b,
    d,
    stride_ab,
    stride_an,
    stride_ad,
    stride_bb,
    stride_bn,
    stride_bd,
    HAS_MASK_A: tl.constexpr,
    HAS_MASK_B: tl.constexpr,
    K: tl.constexpr,
    KP: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
):
    pid_m = tl.program_id(0)
    bid = tl.program_id(1).to(tl.int64)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    slot = tl.arange(0, KP)
    a_base = a_ptr + bid * stride_ab
    b_base = b_ptr + bid * stride_bb

    # Running top-k per row; slots >= K only pad KP to a power of two and are never used.
    top_s = tl.full((BLOCK_M, KP), _NEG_INF, dtype=tl.float32)
    top_i = tl.zeros((BLOCK_M, KP), dtype=tl.int32)
    live = (slot[None, :] < K) & (rows[:, None] >= 0)  # [BLOCK_M, KP]
    inv_a = tl.load(inv_a_ptr + bid * n_a + rows, mask=rows < n_a, other=0.0)

    for n0 in range(0, n_b, BLOCK_N):
        cols = n0 + tl.arange(0, BLOCK_N)
        inv_b = tl.load(inv_b_ptr + bid * n_b + cols, mask=cols < n_b, other=0.0)
        sim = _cos_tile(
            a_base, b_base, inv_a, inv_b, rows, cols, n_a, n_b, d, stride_an, stride_ad, stride_bn, stride_bd,
            BLOCK_M, BLOCK_N, BLOCK_K, DOT_PRECISION, UPCAST,
        )  # fmt: skip
        col_ok = cols < n_b
        if HAS_MASK_B:
            col_ok &= tl.load(mask_b_ptr + bid * n_b + cols, mask=cols < n_b, other=0) != 0
        sim = tl.where(col_ok[None, :], sim, _NEG_INF)
        for _ in range(K):
            best = tl.max(sim, axis=1)  # [BLOCK_M]
            best_col = tl.min(tl.where(sim == best[:, None], cols[None, :], n_b + BLOCK_N), axis=1)
            # Evict the list's smallest score; among equal smallest, the highest column.
            cur = tl.where(live, top_s, _POS_INF)
            worst = tl.min(cur, axis=1)
            evict = tl.max(tl.where(cur == worst[:, None], top_i * KP + slot[None, :], -1), axis=1) % KP
            # Strictly greater: a later (higher) column never displaces an equal earlier one.
            take = best > worst
            upd = take[:, None] & (slot[None, :] == evict[:, None])
            top_s = tl.where(upd, best[:, None], top_s)
            top_i = tl.where(upd, best_col[:, None], top_i)
            sim = tl.where(cols[None, :] == best_col[:, None], _NEG_INF, sim)

    row_ok = rows < n_a
    if HAS_MASK_A:
        row_valid = tl.load(mask_a_ptr + bid * n_a + rows, mask=row_ok, other=0) != 0
    else:
        row_valid = row_ok
    out_base = bid * n_a * K + rows * K
    # Emit in descending score order, lowest column first among equal scores.
    for r in range(K):
        cur = tl.where(live, top_s, _NEG_INF)
        best = tl.max(cur, axis=1)
        cand = live & (cur == best[:, None])
        key = tl.min(tl.where(cand, top_i * KP + slot[None, :], 2147483647), axis=1)
        pick = key % KP
        idx = key // KP
        live &= slot[None, :] != pick[:, None]
        best = tl.where(row_valid, best, _NEG_INF)
        idx = tl.where(row_valid, idx, 0)
        tl.store(out_s_ptr + out_base + r, best, mask=row_ok)
        tl.store(out_i_ptr + out_base + r, idx.to(tl.int64), mask=row_ok)


@triton.jit
def _energy_kernel(
    x_ptr,
    inv_ptr,
    mask_ptr,
    out_ptr,
    n,
    d,
    stride_xb,
    stride_xn,
    stride_xd,
    margin,
    inv_temperature,
    HAS_MASK: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
):
    pid_m = tl.program_id(0)
    bid = tl.program_id(1).to(tl.int64)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    x_base = x_ptr + bid * stride_xb
    inv_rows = tl.load(inv_ptr + bid * n + rows, mask=rows < n, other=0.0)
    total = tl.zeros((BLOCK_M,), dtype=tl.float32)
    count = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for n0 in range(0, n, BLOCK_N):
        cols = n0 + tl.arange(0, BLOCK_N)
        inv_cols = tl.load(inv_ptr + bid * n + cols, mask=cols < n, other=0.0)
        sim = _cos_tile(
            x_base, x_base, inv_rows, inv_cols, rows, cols, n, n, d, stride_xn, stride_xd, stride_xn, stride_xd,
            BLOCK_M, BLOCK_N, BLOCK_K, DOT_PRECISION, UPCAST,
        )  # fmt: skip
        col_ok = cols < n
        if HAS_MASK:
            col_ok &= tl.load(mask_ptr + bid * n + cols, mask=cols < n, other=0) != 0
        z = (sim - margin) * inv_temperature
        elu = tl.where(z > 0, z, tl.exp(tl.minimum(z, 0.0)) - 1.0)
        total += tl.sum(tl.where(col_ok[None, :], elu, 0.0), axis=1)
        count += col_ok.to(tl.float32)
    mean = total / tl.maximum(tl.sum(count, axis=0), 1.0)
    row_ok = rows < n
    if HAS_MASK:
        row_valid = tl.load(mask_ptr + bid * n + rows, mask=row_ok, other=0) != 0
        mean = tl.where(row_valid, mean, _NEG_INF)
    tl.store(out_ptr + bid * n + rows, mean, mask=row_ok)


@triton.jit
def _redundancy_kernel(
    x_ptr,
    inv_ptr,
    mask_ptr,
    out_ptr,
    n,
    d,
    stride_xb,
    stride_xn,
    stride_xd,
    threshold,
    HAS_MASK: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
):
    pid_m = tl.program_id(0)
    bid = tl.program_id(1).to(tl.int64)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    x_base = x_ptr + bid * stride_xb
    inv_rows = tl.load(inv_ptr + bid * n + rows, mask=rows < n, other=0.0)
    total = tl.zeros((BLOCK_M,), dtype=tl.int32)
    for n0 in range(0, n, BLOCK_N):
        cols = n0 + tl.arange(0, BLOCK_N)
        inv_cols = tl.load(inv_ptr + bid * n + cols, mask=cols < n, other=0.0)
        sim = _cos_tile(
            x_base, x_base, inv_rows, inv_cols, rows, cols, n, n, d, stride_xn, stride_xd, stride_xn, stride_xd,
            BLOCK_M, BLOCK_N, BLOCK_K, DOT_PRECISION, UPCAST,
        )  # fmt: skip
        col_ok = cols < n
        if HAS_MASK:
            col_ok &= tl.load(mask_ptr + bid * n + cols, mask=cols < n, other=0) != 0
        hit = (sim > threshold) & col_ok[None, :] & (cols[None, :] != rows[:, None])
        total += tl.sum(hit.to(tl.int32), axis=1)
    row_ok = rows < n
    if HAS_MASK:
        row_valid = tl.load(mask_ptr + bid * n + rows, mask=row_ok, other=0) != 0
        total = tl.where(row_valid, total, 0)
    tl.store(out_ptr + bid * n + rows, total.to(tl.int64), mask=row_ok)


@triton.jit
def _cls_logits_kernel(
    q_ptr,
    k_ptr,
    out_ptr,
    t,
    h,
    dh,
    scale,
    stride_qb,
    stride_qh,
    stride_qd,
    stride_kb,
    stride_kt,
    stride_kh,
    stride_kd,
    BLOCK_T: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    pid_t = tl.program_id(0)
    pid_bh = tl.program_id(1).to(tl.int64)
    bid = pid_bh // h
    hid = pid_bh % h
    ts = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
    t_ok = ts < t
    acc = tl.zeros((BLOCK_T,), dtype=tl.float32)
    for d0 in range(0, dh, BLOCK_D):
        ds = d0 + tl.arange(0, BLOCK_D)
        d_ok = ds < dh
        q = tl.load(q_ptr + bid * stride_qb + hid * stride_qh + ds * stride_qd, mask=d_ok, other=0.0)
        keys = tl.load(
            k_ptr + bid * stride_kb + ts[:, None] * stride_kt + hid * stride_kh + ds[None, :] * stride_kd,
            mask=t_ok[:, None] & d_ok[None, :],
            other=0.0,
        )
        acc += tl.sum(keys.to(tl.float32) * q.to(tl.float32)[None, :], axis=1)
    tl.store(out_ptr + pid_bh * t + ts, acc * scale, mask=t_ok)


INTERPRETED = not isinstance(_cosine_topk_kernel, triton.runtime.JITFunction)
"""True when triton was imported with TRITON_INTERPRET=1: kernels run on CPU tensors, in numpy."""


# --------------------------------------------------------------------------------------------------
# Launchers. They expect checked inputs (see reference.check_*); the public ops in
# vtcompress.kernels check and dispatch.


# Explicit, so results do not depend on TRITON_DEFAULT_FP_FUSION (and triton 3.9 does not warn that
# its default will change). Fused multiply-adds match what the BLAS behind the torch reference does.
_COMPILE_OPTIONS = {"enable_fp_fusion": True}


def _dot_precision(dtype: torch.dtype) -> str:
    # IEEE float32 dots for float32 inputs (TF32 would drift from the reference by ~1e-3);
    # half-precision inputs multiply exactly into the float32 accumulator anyway.
    return "ieee" if dtype == torch.float32 else "tf32"


def _upcast(dtype: torch.dtype) -> bool:
    # Triton's interpreter stores bfloat16 as raw uint16 and multiplies those integers in tl.dot
    # (triton 3.9), so under TRITON_INTERPRET=1 bfloat16 tiles are widened to float32 first (exact).
    return INTERPRETED and dtype == torch.bfloat16


def _tiles(
    dtype: torch.dtype,
    d: int,
    block_m: int | None,
    block_n: int | None,
    block_k: int | None,
    num_warps: int | None,
) -> dict:
    """Tile sizes and warps: explicit arguments win, else defaults per input dtype.

    The defaults compile for sm_90 without register spills (checked with ptxas -v): float32 IEEE
    dots run on FMA units and need 8 warps for a 64 x 64 x 32 tile; half precision uses tensor
    cores with 64 x 64 x 64 tiles and 4 warps. They are not tuned on hardware.
    """
    half = dtype != torch.float32
    cfg = {
        "BLOCK_M": block_m or 64,
        "BLOCK_N": block_n or 64,
        "BLOCK_K": block_k or max(16, min(64 if half else 32, triton.next_power_of_2(d))),
        "num_warps": num_warps or (4 if half else 8),
        **_COMPILE_OPTIONS,
    }
    if min(cfg["BLOCK_M"], cfg["BLOCK_N"], cfg["BLOCK_K"]) < 16:
        raise ValueError(f"tl.dot needs tiles of at least 16, got {cfg}")
    return cfg


def _common(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Both operands in one supported dtype (tl.dot needs equal operand types)."""
    dtype = torch.promote_types(a.dtype, b.dtype)
    if dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"Triton ops support {SUPPORTED_DTYPES}, got {a.dtype} and {b.dtype}")
    return a.to(dtype), b.to(dtype)


def _on_device(t: Tensor) -> contextlib.AbstractContextManager:
    """Triton launches on the current CUDA device: make it the tensors' device."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def _inv_norms(x: Tensor) -> Tensor:
    """[B, N] float32 inverse row norms of x [B, N, D] (O(N) extra memory)."""
    bsz, n, d = x.shape
    out = torch.empty(bsz, n, dtype=torch.float32, device=x.device)
    block_r = 32
    _inv_norm_kernel[(triton.cdiv(n, block_r), bsz)](
        x, out, n, d, x.stride(0), x.stride(1), x.stride(2),
        BLOCK_R=block_r, BLOCK_D=max(16, min(128, triton.next_power_of_2(d))), **_COMPILE_OPTIONS,
    )  # fmt: skip
    return out


def _mask_arg(mask: Tensor | None, fallback: Tensor) -> Tensor:
    return fallback if mask is None else mask.contiguous().view(torch.uint8)


def cosine_topk(
    a: Tensor,
    b: Tensor,
    k: int = 1,
    mask_a: Tensor | None = None,
    mask_b: Tensor | None = None,
    *,
    block_m: int | None = None,
    block_n: int | None = None,
    block_k: int | None = None,
    num_warps: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Triton :func:`vtcompress.kernels.cosine_topk` for ``k <= MAX_TOPK`` (same shapes and semantics)."""
    if not 1 <= k <= MAX_TOPK:
        raise ValueError(f"the Triton top-k handles 1 <= k <= {MAX_TOPK}, got {k}")
    a, b = _common(a, b)
    bsz, n_a, d = a.shape
    n_b = b.shape[1]
    scores = torch.empty(bsz, n_a, k, dtype=torch.float32, device=a.device)
    idx = torch.empty(bsz, n_a, k, dtype=torch.long, device=a.device)
    if n_a == 0 or bsz == 0:
        return scores, idx
    cfg = _tiles(a.dtype, d, block_m, block_n, block_k, num_warps)
    grid = (triton.cdiv(n_a, cfg["BLOCK_M"]), bsz)
    with _on_device(a):
        _cosine_topk_kernel[grid](
            a, b, _inv_norms(a), _inv_norms(b), _mask_arg(mask_a, scores), _mask_arg(mask_b, scores), scores, idx,
            n_a, n_b, d, a.stride(0), a.stride(1), a.stride(2), b.stride(0), b.stride(1), b.stride(2),
            HAS_MASK_A=mask_a is not None, HAS_MASK_B=mask_b is not None,
            K=k, KP=triton.next_power_of_2(k), DOT_PRECISION=_dot_precision(a.dtype), UPCAST=_upcast(a.dtype),
            **cfg,
        )  # fmt: skip
    return scores, idx


def energy_score(
    x: Tensor,
    margin: float,
    temperature: float = 1.0,
    mask: Tensor | None = None,
    *,
    block_m: int | None = None,
    block_n: int | None = None,
    block_k: int | None = None,
    num_warps: int | None = None,
) -> Tensor:
    """Triton :func:`vtcompress.kernels.energy_score` (same shapes and semantics)."""
    if x.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"Triton ops support {SUPPORTED_DTYPES}, got {x.dtype}")
    bsz, n, d = x.shape
    out = torch.empty(bsz, n, dtype=torch.float32, device=x.device)
    if n == 0 or bsz == 0:
        return out
    cfg = _tiles(x.dtype, d, block_m, block_n, block_k, num_warps)
    grid = (triton.cdiv(n, cfg["BLOCK_M"]), bsz)
    with _on_device(x):
        _energy_kernel[grid](
            x, _inv_norms(x), _mask_arg(mask, out), out, n, d, x.stride(0), x.stride(1), x.stride(2),
            float(margin), 1.0 / float(temperature), HAS_MASK=mask is not None,
            DOT_PRECISION=_dot_precision(x.dtype), UPCAST=_upcast(x.dtype), **cfg,
        )  # fmt: skip
    return out


def redundancy_count(
    x: Tensor,
    threshold: float,
    mask: Tensor | None = None,
    *,
    block_m: int | None = None,
    block_n: int | None = None,
    block_k: int | None = None,
    num_warps: int | None = None,
) -> Tensor:
    """Triton :func:`vtcompress.kernels.redundancy_count` (same shapes and semantics)."""
    if x.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"Triton ops support {SUPPORTED_DTYPES}, got {x.dtype}")
    bsz, n, d = x.shape
    out = torch.empty(bsz, n, dtype=torch.long, device=x.device)
    if n == 0 or bsz == 0:
        return out
    cfg = _tiles(x.dtype, d, block_m, block_n, block_k, num_warps)
    grid = (triton.cdiv(n, cfg["BLOCK_M"]), bsz)
    with _on_device(x):
        _redundancy_kernel[grid](
            x, _inv_norms(x), _mask_arg(mask, out), out, n, d, x.stride(0), x.stride(1), x.stride(2),
            float(threshold), HAS_MASK=mask is not None,
            DOT_PRECISION=_dot_precision(x.dtype), UPCAST=_upcast(x.dtype), **cfg,
        )  # fmt: skip
    return out


def cls_attention_logits(
    q_cls: Tensor, keys: Tensor, scale: float, *, block_t: int = 64, block_d: int | None = None
) -> Tensor:
    """Triton :func:`vtcompress.kernels.cls_attention_logits` (same shapes and semantics)."""
    for t_ in (q_cls, keys):
        if t_.dtype not in SUPPORTED_DTYPES:
            raise TypeError(f"Triton ops support {SUPPORTED_DTYPES}, got {t_.dtype}")
    bsz, t, h, dh = keys.shape
    out = torch.empty(bsz, h, t, dtype=torch.float32, device=keys.device)
    if t == 0 or bsz * h == 0:
        return out
    if block_d is None:
        block_d = min(128, triton.next_power_of_2(dh))
    grid = (triton.cdiv(t, block_t), bsz * h)
    with _on_device(keys):
        _cls_logits_kernel[grid](
            q_cls, keys, out, t, h, dh, float(scale),
            q_cls.stride(0), q_cls.stride(1), q_cls.stride(2),
            keys.stride(0), keys.stride(1), keys.stride(2), keys.stride(3),
            BLOCK_T=block_t, BLOCK_D=block_d, **_COMPILE_OPTIONS,
        )  # fmt: skip
    return out
