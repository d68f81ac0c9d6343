"""The one tolerance table: how far a result may be from what it is compared with.

Every numerical comparison in the tests takes its bound from here. "default" is docs/testing.md's
rule for fastrnn against torch.nn (or the reference) in the same dtype; each other entry
says why its comparisons need another bound. A value serves as both atol and rtol unless it
is an (atol, rtol) pair.
"""

import torch

F64, F32, BF16, F16 = torch.float64, torch.float32, torch.bfloat16, torch.float16

TOLERANCES = {
    # fastrnn vs torch.nn or the reference, same dtype: float64 to ~1e-10, float32 to
    # PyTorch's own CPU-vs-cuDNN tolerance.
    "default": {F64: 1e-10, F32: 5e-5},
    # Tighter: one computation done twice by fastrnn's own code (the CPU walks against each
    # other, the CUDA ops and their host emulation against the CPU ops, a backward op against
    # autograd through the same op, DDP against one process, a module on a side stream):
    # only the order of the sums differs, and in bf16/fp16 the last bit of a rounded result.
    "same_computation": {F64: 1e-12, F32: 1e-5, BF16: 2e-2, F16: 2e-3},
    # Tighter still in atol: a CUDA graph's replay against eager mode (the same kernels).
    "cuda_graph_replay": {F32: (1e-6, 1e-5)},
    # Tighter: the bad-input tests' float32 problems that both torch.nn and fastrnn run are
    # tiny (4 inputs, 5 units, a few steps); their rounding stays far below "default".
    "small_float32": {F32: 1e-5},
    # A product of up to a few hundred terms (fastrnn::linear) against the float64 product,
    # as a bound on the absolute error relative to the result's largest magnitude (each
    # element's error grows with the terms' sizes, not with its own).
    "product_vs_float64": {F64: 1e-12, F32: 2e-5},
    # Tighter than "default": one layer (or recurrence) with its input product formed by
    # another library (oneDNN instead of BLAS, or eager instead of compiled): the products'
    # sums in another order, carried through a few steps.
    "other_product_library": {F32: 2e-5},
    # Looser: fastrnn and torch.nn compared with each other under autocast, each rounding its
    # products to the autocast dtype in its own order (their errors against float64 have the
    # low-precision rule, LOW_PRECISION below).
    "autocast": {BF16: 5e-2, F16: 5e-2},
    # Looser: a module and its torch.nn twin both moved with .cuda().half(), compared with
    # each other: outputs, every product rounded to float16 by each ...
    "half_module": {F16: 1e-2},
    # ... and gradients, sums over time and batch of such products.
    "half_module_grad": {F16: 3e-2},
}

# bf16/fp16 against a float64 result (docs/testing.md): fastrnn's error at most `factor` times
# torch.nn's own error in the same dtype, plus `slack` times the largest magnitude (a floor
# for results that torch.nn happens to get almost exactly).
LOW_PRECISION = {"factor": 2, "slack": 1e-2}

# One unit in the last place of the 16-bit types, relative.
ULP = {BF16: 2.0 ** -8, F16: 2.0 ** -11}

# torch.autograd.gradcheck in float64: tighter than its defaults (atol 1e-5, rtol 1e-3).
GRADCHECK = {"eps": 1e-6, "atol": 1e-7, "rtol": 1e-5}


def tolerance(dtype, kind="default"):
    """The bound for results of `dtype` in comparisons of `kind`: a float, or an (atol,
    rtol) pair."""
    return TOLERANCES[kind][dtype]


def atol_rtol(dtype, kind="default"):
    """tolerance() as keyword arguments of torch.testing.assert_close."""
    tol = tolerance(dtype, kind)
    atol, rtol = tol if isinstance(tol, tuple) else (tol, tol)
    return {"atol": atol, "rtol": rtol}
