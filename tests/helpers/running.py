"""Running a module: forward, and backward through a loss that reaches every gradient
path."""

import torch
from torch.nn.utils.rnn import PackedSequence


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
