"""The tolerance table: how far a result may be from what it is compared with."""

import torch

# fastrnn vs torch.nn or the reference, same dtype (DESIGN.md): float64 to ~1e-10, float32
# to PyTorch's own CPU-vs-cuDNN tolerance.
TOLERANCE = {torch.float64: 1e-10, torch.float32: 5e-5}


def tolerance(dtype):
    return TOLERANCE[dtype]
