"""The layers' input product, x @ W_ih^T + b for every row of a layer, and the op that forms
it where that was measured faster than torch's BLAS (oneDNN from a depth, fastrnn's panel
kernel below it or for a result that would come fresh from the kernel, oneDNN for bfloat16
with a bias): fastrnn::linear (csrc/cpu/linear.cpp), its
fake kernel and autograd, and the rule that sends a product to it (input_product); and
fastrnn::convert (csrc/cpu/convert.cpp), which converts a product computed in another dtype
and its gradient."""

import torch

from . import _C
from ._ops import input_product_grads, ops

# The least depth (K of [N, K] @ [K, M]) from which fastrnn::linear takes oneDNN on this CPU
# (fastrnn's own kernel below it), or 0 where the op is torch.addmm's: where it was not
# measured faster (csrc/cpu/linear.cpp), or where torch has no oneDNN.
LINEAR_MIN_DEPTH = _C.LINEAR_MIN_DEPTH

# From how many multiply-adds a product goes through the op: its Python autograd costs 6-18
# us a call more than torch.addmm's (2 threads, AMD EPYC: 24.4 against 6.8 us with autograd,
# 10.9 against 5.1 us without, at [8, 16] @ [16, 32]), about 2% of a product of 2^27, where
# the op saves 2-20% (more where its reused result saves page faults).
LINEAR_MIN_MULTIPLY_ADDS = 1 << 27

# From how large a result (bytes) a float32 product below oneDNN's depth, or a float64
# product at any depth, goes through the op at any number of multiply-adds (_through_linear):
# there the op's result comes from buffers reused from call to call, where torch.addmm's,
# fresh, page-faults at first touch (0.37 ms of a 1.6 ms [700, 200] @ [200, 800]).
# PyTorch's word_language_model (2 layers, I=H=200, B=20, T=35), 2 threads, AMD EPYC,
# in-process, 41 rounds in shuffled order, median ms, addmm against the op: LSTM inference
# 6.73 vs 6.21 (torch.nn 6.09), training 20.06 vs 20.18; GRU inference 4.82 vs 4.63,
# training 14.76 vs 13.76; the RNN (a 560 KB result, unchanged) 3.08 vs 3.07.
LINEAR_POOLED_BYTES = _C.LINEAR_POOLED_BYTES

# From how large a float32 result (bytes) a product goes through the op on every CPU, at any
# depth: there torch.addmm's result, or oneDNN's, would be a fresh mapping whose every page
# faults at first touch (glibc maps each allocation from 32 MB anew). The layers' input
# product at T100 B64 I=H=512 (LSTM, a 52 MB result), 2 threads, AMD EPYC: torch.addmm
# 97-108 ms, oneDNN 83-85, the op 66-69 (its panel kernel into a reused buffer).
LINEAR_FRESH_BYTES = _C.LINEAR_FRESH_BYTES

# Whether a large bfloat16 product with a bias (LINEAR_MIN_MULTIPLY_ADDS, or a result of
# LINEAR_POOLED_BYTES) goes through the op, oneDNN on: where its float32 product was
# measured (LINEAR_MIN_DEPTH) and oneDNN computes in bfloat16, its inner product adds the
# bias as it stores, where torch.addmm first copies the bias into every row of the result.
# bfloat16 autocast inference at T100 B64 I=H=512, 2 threads, AMD EPYC with AVX512-BF16:
# the LSTM's input product [6400, 512] @ [512, 2048] 34.7 ms through torch.addmm, 31.8
# through the op; the layers in one process, the rule off and on alternated, median of 9,
# ms: LSTM 78.5-80.7 vs 76.6-76.9, GRU 60.2 vs 59.0, RNN 20.0 vs 19.2.
LINEAR_BFLOAT16_BIAS = bool(_C.LINEAR_BFLOAT16_BIAS)


def input_product(x, w_ih, bias=None, dtype=None):
    """x @ w_ih^T (+ bias): x [N, I], w_ih [G*H, I], bias [G*H] or None -> [N, G*H], in
    x's dtype; the product computed in dtype where one is given (16-bit operands, float
    accumulation; its gradients too), as autocast computes one, and the bias added after it
    in x's dtype (its gradient, a sum over all rows, is not rounded to dtype).

    Through fastrnn::linear in float32 on the CPUs where it was measured faster (at every
    depth: oneDNN from LINEAR_MIN_DEPTH, fastrnn's kernel below), oneDNN on, where the
    product (LINEAR_MIN_MULTIPLY_ADDS) or its result (LINEAR_POOLED_BYTES) is large enough,
    and on every CPU where its result is LINEAR_FRESH_BYTES or more (into a reused buffer);
    a large one in bfloat16 with a bias where LINEAR_BFLOAT16_BIAS says (oneDNN on); in
    float64 on every CPU where the result is LINEAR_POOLED_BYTES or more (BLAS into a reused
    buffer: a reservoir's [10000, 1] @ [1, 2000], 2 threads, AMD EPYC, 54-65 ms with
    torch.addmm against 16-20 ms); else torch.addmm. Never inside torch.compile or
    torch.export: their graphs keep torch.addmm, which they lower as they see fit and run on
    any device, and a decision on the number of rows would become a guard on the graph's
    dynamic sizes."""
    if dtype is not None and dtype != x.dtype:
        product = convert(input_product(x.to(dtype), w_ih.to(dtype)), x.dtype)
        return product if bias is None else product.add_(bias)
    if x.is_cpu and not torch.compiler.is_compiling() and _through_linear(x, w_ih, bias):
        return ops.linear(x, w_ih, bias)
    return torch.mm(x, w_ih.t()) if bias is None else torch.addmm(bias, x, w_ih.t())


def _through_linear(x, w_ih, bias):
    """Whether input_product sends x [N, K] @ w_ih^T ([M, K]) (+ bias) on the CPU to the op."""
    (rows, depth), outputs = x.shape, w_ih.shape[0]
    result_bytes = rows * outputs * x.element_size()
    pooled = result_bytes >= LINEAR_POOLED_BYTES
    if x.dtype == torch.float64:  # BLAS into a reused buffer, on every CPU
        return pooled
    large_product = rows * outputs * depth >= LINEAR_MIN_MULTIPLY_ADDS
    if x.dtype == torch.bfloat16:
        return (bias is not None and (pooled or large_product) and LINEAR_BFLOAT16_BIAS
                and torch.backends.mkldnn.enabled)
    if x.dtype != torch.float32:
        return False
    if result_bytes >= LINEAR_FRESH_BYTES:  # on every CPU
        return True
    return (LINEAR_MIN_DEPTH and torch.backends.mkldnn.enabled
            and (large_product or (depth < LINEAR_MIN_DEPTH and pooled)))

def convert(t, dtype):
    """t in dtype, a new tensor (its gradient converted back): through fastrnn::convert on
    the CPU, whose buffers are reused from call to call, outside torch.compile and
    torch.export (their graphs keep Tensor.to); else Tensor.to."""
    if t.is_cpu and not torch.compiler.is_compiling():
        return ops.convert(t, dtype)
    return t.to(dtype)


@torch.library.register_fake("fastrnn::convert")
def _(self, dtype):
    return self.new_empty(self.shape, dtype=dtype)


def _convert_setup(ctx, inputs, output):
    ctx.dtype = inputs[0].dtype


def _convert_backward(ctx, grad):
    return convert(grad, ctx.dtype), None


torch.library.register_autograd("fastrnn::convert", _convert_backward,
                                setup_context=_convert_setup)


@torch.library.register_fake("fastrnn::linear")
def _(input, weight, bias):
    """input [N, K], weight [M, K], bias [M] or None -> a contiguous [N, M]."""
    torch._check(input.dim() == 2 and weight.dim() == 2 and input.shape[1] == weight.shape[1],
                 lambda: "fastrnn::linear: input [N, K] and weight [M, K] expected")
    torch._check(input.dtype == weight.dtype and input.is_floating_point(),
                 lambda: "fastrnn::linear: input and weight must have one floating dtype")
    torch._check(bias is None or (bias.dim() == 1 and bias.shape[0] == weight.shape[0]),
                 lambda: "fastrnn::linear: bias [M] expected")
    for t in (weight, bias):
        torch._check(t is None or t.device == input.device,
                     lambda: "fastrnn::linear: every tensor must be on the input's device")
    return input.new_empty(input.shape[0], weight.shape[0])


def _linear_setup(ctx, inputs, output):
    input, weight, bias = inputs  # [N, K], [M, K], [M] or None
    # What each gradient reads: the input's the weight, the weight's the input.
    ctx.save_for_backward(input if weight.requires_grad else None,
                          weight if input.requires_grad else None)
    ctx.has_bias = bias is not None


def _linear_backward(ctx, grad):
    """grad [N, M] -> (grad @ weight [N, K], grad^T @ input [M, K], the rows' sum [M])."""
    input, weight = ctx.saved_tensors
    needs_input, needs_weight, needs_bias = ctx.needs_input_grad
    return input_product_grads(grad, input, weight, needs_input, needs_weight,
                               ctx.has_bias and needs_bias)


torch.library.register_autograd("fastrnn::linear", _linear_backward, setup_context=_linear_setup)
