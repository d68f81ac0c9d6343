"""fastrnn: fused LSTM, GRU and RNN layers and cells, exact drop-ins for torch.nn's, the
variants of the literature (peephole and coupled-gate LSTMs, layer-normalised LSTMs and
GRUs), and the structured recurrences built on them (dilated stacks, clockwork RNNs, echo
state networks)."""

from . import functional
from ._ops import ops
from .cells import GRUCell, LSTMCell, RNNCell
from .clockwork import ClockworkRNN
from .dilated import DilatedGRU, DilatedLSTM, DilatedRNN
from .esn import EchoStateNetwork, Reservoir
from .modules import GRU, LSTM, RNN
from .variants import VariantGRU, VariantGRUCell, VariantLSTM, VariantLSTMCell

__all__ = ["LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell", "DilatedLSTM", "DilatedGRU",
           "DilatedRNN", "VariantLSTM", "VariantGRU", "VariantLSTMCell",
           "VariantGRUCell", "ClockworkRNN", "EchoStateNetwork",
           "Reservoir", "functional", "ops"]
__version__ = "0.1.0"
