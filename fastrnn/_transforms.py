"""The calls that fastrnn's ops cannot serve: under torch.func's transforms that
differentiate, and in a TorchScript trace. There the layers and cells with a torch.nn twin
call the twin's forward (runs_torch_nn), and the modules with none refuse
(refuse_differentiating_transform, refuse_torchscript)."""

import torch

# The top of functorch's transform stack, read on every call of a layer or cell (the C
# function itself: a Python function of ours around it would cost as much again).
_transform_top = torch._C._functorch.peek_interpreter_stack


def runs_torch_nn():
    """Whether a layer or cell with a torch.nn twin calls the twin's forward instead of
    fastrnn's ops: in a TorchScript trace (whose graph is then torch.nn's) and under a
    differentiating torch.func transform (differentiating_transform)."""
    return torch.jit.is_tracing() or (_transform_top() is not None and
                                      differentiating_transform())


def differentiating_transform():
    """Whether a torch.func transform that differentiates (grad, vjp, jacrev, jacfwd, jvp,
    hessian) is active around this call: the ops' autograd functions (torch.library's
    generated ones, the cells' C++ one) cannot run inside those. vmap alone runs the ops,
    once per batch entry (PyTorch's fallback). False while torch.compile traces, which
    keeps the ops in its graph."""
    if _transform_top() is None:  # no transform: a plain call
        return False
    return not torch.compiler.is_compiling() and any(
        level.key() != torch._C._functorch.TransformType.Vmap
        for level in torch._C._functorch.get_interpreter_stack())


def refuse_differentiating_transform(name):
    """A clear error for fastrnn.<name>, which has no torch.nn twin to run, under a
    differentiating torch.func transform (differentiating_transform)."""
    if differentiating_transform():
        raise RuntimeError(
            f"fastrnn.{name}: torch.func's differentiating transforms (grad, vjp, jacrev, "
            "jacfwd, jvp, hessian) are not supported by fastrnn's ops; under them "
            "fastrnn.LSTM, GRU, RNN and the cells run torch.nn's implementation, which this "
            "module does not have. Differentiate it with torch.autograd (backward, "
            "torch.autograd.grad) instead")


def refuse_torchscript(name):
    """The error for fastrnn.<name>, which has no torch.nn twin, under TorchScript."""
    raise RuntimeError(f"fastrnn.{name} has no TorchScript translation (torch.jit.trace, "
                       "torch.jit.script)")
