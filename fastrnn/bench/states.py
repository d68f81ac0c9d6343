"""The cases that carry states (grids.Case kind and hx): the modules, inputs and runners of a
cell call, a loop through a cell, and a layer called with its initial states given.

A case's states are a tuple: (h, c) for an LSTM, (h,) otherwise; the module is called with
hx = (h, c) for an LSTM, h otherwise, or None when the case does not give them (hx False).
- kind "layer": module(x, hx) on x [T, B, I], states [layers * D, B, H]; output [T, B, D*H].
- kind "cell": cell(x, hx) on x [B, I], states [B, H]; output h [B, H].
- kind "cell_loop": for x_t in x: states = cell(x_t, states), starting from hx, as a training
  loop over nn.LSTMCell runs it; output torch.stack of the T h's, [T, B, H]. The loop takes
  the steps' inputs as iterating over x gives them (x.unbind(0)), not as x[t]: autograd
  differentiates each x[t] into a zero tensor of x's whole shape, T of them, which cost both
  libraries alike (T100 B128 I=H=1024, RNN_TANH, 2 threads: 3.1 s against 1.1 s a loop).
fwdbwd differentiates the loss sum(output * grad_out) (grad_out random, shaped as the
output; one backward after the whole loop) with respect to x, the given states (leaves
that require grad, as the states a loop carries are part of its graph) and the parameters.

A runner fn(index) runs the case on inputs[index % len] and returns the tensors the parity
check compares: output and final states, then for fwdbwd the gradients of x and the given
states.
"""

import torch


def _shapes(case):
    """(x's shape, one state's shape, the output's shape) of one call of the case."""
    directions = 2 if case.bidirectional else 1
    if case.kind == "cell":
        return (case.B, case.I), (case.B, case.H), (case.B, case.H)
    if case.kind == "cell_loop":
        return (case.T, case.B, case.I), (case.B, case.H), (case.T, case.B, case.H)
    return ((case.T, case.B, case.I), (case.layers * directions, case.B, case.H),
            (case.T, case.B, directions * case.H))


def make_state_inputs(case, device, count, seed=1):
    """`count` distinct (x, states) pairs (states None without hx) and one output gradient;
    for fwdbwd, x and the states require grad."""
    g = torch.Generator().manual_seed(seed)
    dtype = getattr(torch, case.dtype)
    x_shape, state_shape, out_shape = _shapes(case)
    leaf = lambda shape: (torch.randn(*shape, generator=g).to(device, dtype)
                          .requires_grad_(case.mode == "fwdbwd"))
    n_states = 2 if case.cell == "LSTM" else 1
    inputs = [(leaf(x_shape), tuple(leaf(state_shape) for _ in range(n_states))
               if case.hx else None) for _ in range(count)]
    grad_out = torch.randn(*out_shape, generator=g).to(device, dtype)
    return inputs, grad_out


def _as_hx(case, states):
    """The hx argument of a call for a states tuple (None stays None)."""
    if states is None or case.cell == "LSTM":
        return states
    return states[0]


def _as_states(result):
    """A call's returned states as a tuple: (h, c) or (h,)."""
    return tuple(result) if isinstance(result, tuple) else (result,)


def call(module, case, x, states):
    """One call of the case: (output, final states tuple)."""
    if case.kind == "layer":
        output, final = module(x, _as_hx(case, states))
        return output, _as_states(final)
    if case.kind == "cell":
        final = _as_states(module(x, _as_hx(case, states)))
        return final[0], final
    outputs = []
    for x_t in x.unbind(0):
        states = _as_states(module(x_t, _as_hx(case, states)))
        outputs.append(states[0])
    return torch.stack(outputs), states


def make_state_runner(module, case, inputs, grad_out):
    """fn(index) running the case on inputs[index % len]; returns (output, *final states)
    for fwd, and then the gradients of x and the given states for fwdbwd."""
    if case.mode == "fwd":
        module.eval()

        def run(index):
            x, states = inputs[index % len(inputs)]
            with torch.no_grad():
                output, final = call(module, case, x, states)
            return (output, *final)
        return run

    module.train()
    params = [p for p in module.parameters() if p.requires_grad]

    def run(index):
        x, states = inputs[index % len(inputs)]
        leaves = [x, *(states or ())]
        output, final = call(module, case, x, states)
        grads = torch.autograd.grad(output, leaves + params, grad_out)
        return (output, *final, *grads[:len(leaves)])
    return run
