"""fastrnn: fused LSTM, GRU and RNN layers, exact drop-ins for torch.nn's."""

from . import functional
from ._ops import ops
from .modules import GRU, LSTM, RNN

__all__ = ["LSTM", "GRU", "RNN", "functional", "ops"]
__version__ = "0.1.0"
