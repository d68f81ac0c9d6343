"""Module pairs: a torch.nn module and a fastrnn module with the same weights."""

import torch

from helpers.cases import CELLS


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
