"""Module pairs: a torch.nn module and a fastrnn module with the same weights."""

import torch

import fastrnn
from helpers.cases import CELLS

# fastrnn's modules with no torch.nn twin to run in their place, small, by name: under
# torch.func's differentiating transforms and TorchScript they refuse.
NO_TWIN = {
    "ClockworkRNN": lambda: fastrnn.ClockworkRNN(4, 8, periods=(1, 2)),
    "DilatedLSTM": lambda: fastrnn.DilatedLSTM(4, 8, num_layers=2),
    "VariantLSTM-peepholes": lambda: fastrnn.VariantLSTM(4, 8, peepholes=True),
    "VariantGRU-layer_norm": lambda: fastrnn.VariantGRU(4, 8, layer_norm=True),
    "VariantLSTMCell-coupled": lambda: fastrnn.VariantLSTMCell(4, 8, coupled_gates=True),
    "Reservoir": lambda: fastrnn.Reservoir(4, 8, seed=0),
    "EchoStateNetwork": lambda: fastrnn.EchoStateNetwork(4, 8, 2, seed=0),
}


def module_kwargs(case, dtype):
    extra = case.kwargs()
    return dict(input_size=case.input_size, hidden_size=case.hidden_size,
                num_layers=case.layers, bias=case.bias, batch_first=case.batch_first,
                dropout=case.dropout, bidirectional=case.bidirectional, dtype=dtype, **extra)


def make_pair(case, dtype=torch.float64, seed=0, device="cpu"):
    """A fresh torch.nn module and a fastrnn module loaded with its state_dict, on device
    (initialised on the CPU, so every device gets the same weights)."""
    torch_cls, fast_cls, _ = CELLS[case.cell]
    torch.manual_seed(seed)
    ref = torch_cls(**module_kwargs(case, dtype))
    fast = fast_cls(**module_kwargs(case, dtype))
    fast.load_state_dict(ref.state_dict())
    return ref.to(device), fast.to(device)
