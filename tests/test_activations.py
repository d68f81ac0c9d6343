"""The cells' activations against torch's over their whole range: on the CPU they are
fastrnn's own branch-free polynomial forms in float32 and float64
(csrc/common/activations.h), on CUDA the device's libm. Read through single-unit cells
whose result is the activation itself:
- tanh: an RNN cell with w_ih = 1 and everything else 0, h' = tanh(x);
- sigmoid: a GRU cell whose only nonzero weight feeds x to the update gate, from h = 1:
  r = 1/2, n = tanh(0) = 0, so h' = (1 - z) n + z h = sigmoid(x).
NaN and Inf are tests/test_robustness_nonfinite.py's; subnormal arguments are left out (the
walks flush them: the README's parity section)."""

import pytest
import torch

import fastrnn
from helpers.devices import DEVICES

# Largest error allowed, in units of the dtype's eps relative to torch's value (on this
# grid, AMD EPYC: float64 tanh 1.0, sigmoid 1.4; float32 tanh 0.9, sigmoid 1.4).
MAX_RELATIVE_ERROR_EPS = 4


# Around the forms' clamps and branches, and where sigmoid's value leaves the normal range
# (log of the smallest normal: -87.34 in float32, -708.40 in float64).
EDGES = [0.625, 8.9, 9.1, 19.0, 19.1, 20.0, 20.5, 40.5, 87.0, 87.3, 87.4, 88.0, 88.5, 90.0,
         708.3, 708.39, 708.4, 708.5, 709.0, 709.5, 709.8, 745.0]


def arguments(dtype):
    """Every 0.01 in [-40, 40], the EDGES, and 4001 magnitudes from the smallest normal to
    near the largest finite value, both signs, as dtype."""
    info = torch.finfo(dtype)
    magnitudes = torch.logspace(torch.log10(torch.tensor(info.tiny)).item(),
                                torch.log10(torch.tensor(info.max)).item() - 0.01, 4001,
                                dtype=torch.float64)
    magnitudes = torch.cat([magnitudes, torch.tensor(EDGES, dtype=torch.float64)])
    x = torch.cat([torch.linspace(-40, 40, 8001, dtype=torch.float64), magnitudes, -magnitudes])
    x = x.to(dtype)
    return x[torch.isfinite(x) & ((x.abs() >= info.tiny) | (x == 0))]


def tanh_cell(dtype, device):
    cell = fastrnn.RNNCell(1, 1, dtype=dtype, device=device).requires_grad_(False)
    for param in cell.parameters():
        param.zero_()
    cell.weight_ih.fill_(1)
    return lambda x: cell(x[:, None])[:, 0]


def sigmoid_cell(dtype, device):
    cell = fastrnn.GRUCell(1, 1, dtype=dtype, device=device).requires_grad_(False)
    for param in cell.parameters():
        param.zero_()
    cell.weight_ih[1] = 1  # the update gate's row (r, z, n)
    return lambda x: cell(x[:, None], torch.ones_like(x)[:, None])[:, 0]


@pytest.mark.parametrize("name", ["tanh", "sigmoid"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_activation_within_a_few_eps_of_torch(device, dtype, name):
    x = arguments(dtype).to(device)
    make, reference = {"tanh": (tanh_cell, torch.tanh),
                       "sigmoid": (sigmoid_cell, torch.sigmoid)}[name]
    got, want = make(dtype, device)(x).double(), reference(x).double()
    info = torch.finfo(dtype)
    # where torch's value is subnormal (sigmoid below -87.34 in float32, -708.40 in float64)
    # fastrnn returns it or 0
    allowed = torch.where(want.abs() >= info.tiny, MAX_RELATIVE_ERROR_EPS * info.eps * want.abs(),
                          info.tiny)
    excess = (got - want).abs() / allowed
    worst = int(excess.argmax())
    assert excess[worst] <= 1, (
        f"{name}({x[worst].item()!r}) = {got[worst].item()!r}, torch's {want[worst].item()!r}")
