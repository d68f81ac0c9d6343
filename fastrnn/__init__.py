"""fastrnn: fused LSTM, GRU and RNN layers and cells, exact drop-ins for torch.nn's."""

from . import functional
from ._ops import ops
from .cells import GRUCell, LSTMCell, RNNCell
from .dilated import DilatedGRU, DilatedLSTM, DilatedRNN
from .modules import GRU, LSTM, RNN

__all__ = ["LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell", "DilatedLSTM", "DilatedGRU",
           "DilatedRNN", "functional", "ops"]
__version__ = "0.1.0"
