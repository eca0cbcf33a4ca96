"""The Triton kernels compile for a CUDA GPU (sm_90) without one: the full pipeline down to a cubin.

The interpreter (test_kernels_triton.py) checks results but not compilation: typing rules such as
loop-carried shapes, constexpr globals and tl.dot's operand constraints are only enforced by the
compiler. This needs triton's bundled CUDA toolchain, not a GPU or driver.
"""

from __future__ import annotations

import importlib.util
import os

import pytest

pytestmark = [
    pytest.mark.skipif(
        importlib.util.find_spec("triton") is None,
        reason='triton is not installed: pip install "vtcompress[kernels]"',
    ),
    pytest.mark.skipif(
        os.environ.get("TRITON_INTERPRET") == "1", reason="TRITON_INTERPRET=1: kernels are interpreted"
    ),
]

TRITON_DTYPE = {"fp32": "ieee", "bf16": "tf32", "fp16": "tf32"}


def _compile(fn, signature: dict, constexprs: dict, num_warps: int):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    full = {**signature, **{name: "constexpr" for name in constexprs}}
    src = ASTSource(fn=fn, signature=full, constexprs=constexprs)
    compiled = triton.compile(
        src, target=GPUTarget("cuda", 90, 32), options={"num_warps": num_warps, "enable_fp_fusion": True}
    )
    assert compiled.asm.get("cubin"), f"{fn.__name__}: no cubin"


def _tiles(dtype: str) -> dict:
    # The launchers' default tiles (triton_ops._tiles) for this dtype.
    return {
        "BLOCK_M": 64,
        "BLOCK_N": 64,
        "BLOCK_K": 32 if dtype == "fp32" else 64,
    }, 8 if dtype == "fp32" else 4


@pytest.mark.slow  # ~10-30 s on first run (cached by triton afterwards)
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_kernels_compile_for_sm90(dtype):
    from vtcompress.kernels import triton_ops as T

    tiles, warps = _tiles(dtype)
    common = {"DOT_PRECISION": TRITON_DTYPE[dtype], "UPCAST": False, **tiles}
    strides3 = lambda p: {f"stride_{p}{s}": "i32" for s in "bnd"}  # noqa: E731
    for k in (1, T.MAX_TOPK):
        _compile(
            T._cosine_topk_kernel,
            {"a_ptr": f"*{dtype}", "b_ptr": f"*{dtype}", "inv_a_ptr": "*fp32", "inv_b_ptr": "*fp32",
             "mask_a_ptr": "*u8", "mask_b_ptr": "*u8", "out_s_ptr": "*fp32", "out_i_ptr": "*i64",
             "n_a": "i32", "n_b": "i32", "d": "i32", **strides3("a"), **strides3("b")},
            {"HAS_MASK_A": True, "HAS_MASK_B": True, "K": k, "KP": k, **common},
            warps,
        )  # fmt: skip
    pair = {
        "x_ptr": f"*{dtype}",
        "inv_ptr": "*fp32",
        "mask_ptr": "*u8",
        "n": "i32",
        "d": "i32",
        **strides3("x"),
    }
    _compile(
        T._energy_kernel,
        {**pair, "out_ptr": "*fp32", "margin": "fp32", "inv_temperature": "fp32"},
        {"HAS_MASK": True, **common},
        warps,
    )
    _compile(
        T._redundancy_kernel,
        {**pair, "out_ptr": "*i64", "threshold": "fp32"},
        {"HAS_MASK": True, **common},
        warps,
    )
    _compile(
        T._inv_norm_kernel,
        {"x_ptr": f"*{dtype}", "out_ptr": "*fp32", "n": "i32", "d": "i32", **strides3("x")},
        {"BLOCK_R": 32, "BLOCK_D": 128},
        4,
    )
    _compile(
        T._cls_logits_kernel,
        {"q_ptr": f"*{dtype}", "k_ptr": f"*{dtype}", "out_ptr": "*fp32", "t": "i32", "h": "i32", "dh": "i32",
         "scale": "fp32", "stride_qb": "i32", "stride_qh": "i32", "stride_qd": "i32",
         "stride_kb": "i32", "stride_kt": "i32", "stride_kh": "i32", "stride_kd": "i32"},
        {"BLOCK_T": 64, "BLOCK_D": 64},
        4,
    )  # fmt: skip
