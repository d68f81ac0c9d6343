"""Running a module: forward, and backward through a loss that reaches every gradient
path."""

import re

import torch
from torch.nn.utils.rnn import PackedSequence

from helpers.compare import assert_close


def flatten_result(result):
    """module(...)'s (output, hidden) as a list of tensors: output (packed: its data),
    h_n and, for LSTM, c_n."""
    output, hidden = result
    if isinstance(output, PackedSequence):
        output = output.data
    hidden = list(hidden) if isinstance(hidden, tuple) else [hidden]
    return [output] + hidden


def weighted_loss(tensors, seed=2):
    """sum_k <w_k, tensors_k> with fixed random weights w_k: every element of every output
    gets its own gradient (unlike .sum())."""
    gen = torch.Generator().manual_seed(seed)
    total = 0
    for t in tensors:
        w = torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t.device, t.dtype)
        total = total + (t * w).sum()
    return total


def run(module, inputs, backward=True):
    """Forward (and backward through weighted_loss) on fresh copies of the inputs.

    Returns (results, grads, result): results as flatten_result; grads a dict name ->
    gradient for 'x', 'h0', 'c0' and every parameter; result module's raw return value.
    """
    inputs = inputs.fresh(requires_grad=backward)
    result = module(*inputs.args())
    outs = flatten_result(result)
    grads = {}
    if backward:
        names = [n for n in ("x", "h0", "c0") if getattr(inputs, n) is not None]
        params = dict(module.named_parameters())
        wrt = [getattr(inputs, n) for n in names] + list(params.values())
        values = torch.autograd.grad(weighted_loss(outs), wrt)
        grads = dict(zip(names + list(params), values))
    return outs, grads, result


def check_double_backward(ref, fast, inputs, flatten):
    """The gradient of a gradient (a gradient penalty: d/d(x, params) of |d loss/dx|^2)
    through fast either equals torch.nn's (ref's) or is refused with a clear error, never
    silently wrong. inputs: fresh() leaves with args() and x; flatten: a module's return
    value as a list of tensors."""
    def second_order(module):
        leaves = inputs.fresh()
        outs = flatten(module(*leaves.args()))
        grad_x, = torch.autograd.grad(weighted_loss(outs), leaves.x, create_graph=True)
        return torch.autograd.grad(grad_x.pow(2).sum(), [leaves.x] + list(module.parameters()))

    want = second_order(ref)
    try:
        got = second_order(fast)
    except (RuntimeError, NotImplementedError) as error:
        assert re.search(r"(?i)double backward|higher.order|second.order|twice",
                         str(error)), f"unclear error for double backward: {error}"
        return
    for a, b in zip(got, want):
        assert_close(a, b, torch.float64, "double backward")


def assert_repeatable_backward(loss, wrt):
    """Three backward passes through one graph (retain_graph) give bitwise the same
    gradients w.r.t. wrt: backward only reads what forward saved."""
    first = torch.autograd.grad(loss, wrt, retain_graph=True)
    second = torch.autograd.grad(loss, wrt, retain_graph=True)
    third = torch.autograd.grad(loss, wrt)
    for a, b, c in zip(first, second, third):
        assert torch.equal(a, b) and torch.equal(a, c)
