"""The configurations the tests run: cells, input kinds, sizes, and Case with its readable
id."""

import dataclasses
import itertools

from torch import nn

import fastrnn

# Small sizes keep the whole parity matrix fast.
T, B, INPUT, HIDDEN, PROJ = 5, 4, 4, 5, 3
LENGTHS_SORTED = [5, 3, 3, 1]  # different lengths, a repeated one and a length-1 sequence
LENGTHS_UNSORTED = [3, 1, 5, 2]

# name -> (torch.nn class, fastrnn class, constructor kwargs)
CELLS = {
    "LSTM": (nn.LSTM, fastrnn.LSTM, {}),
    "LSTM-proj": (nn.LSTM, fastrnn.LSTM, {"proj_size": PROJ}),
    "GRU": (nn.GRU, fastrnn.GRU, {}),
    "RNN-tanh": (nn.RNN, fastrnn.RNN, {"nonlinearity": "tanh"}),
    "RNN-relu": (nn.RNN, fastrnn.RNN, {"nonlinearity": "relu"}),
}
KINDS = ("dense", "packed_sorted", "packed_unsorted", "unbatched")


@dataclasses.dataclass(frozen=True)
class Case:
    cell: str = "LSTM"
    bias: bool = True
    layers: int = 1
    bidirectional: bool = False
    batch_first: bool = False
    kind: str = "dense"
    hx: bool = True
    dropout: float = 0.0
    input_size: int = INPUT
    hidden_size: int = HIDDEN
    steps: int = T
    batch: int = B
    lengths: tuple = None  # packed kinds: per-sequence lengths (default by kind)
    proj_size: int = None  # LSTM-proj: overrides PROJ

    @property
    def id(self):
        return "-".join([
            self.cell, "bias" if self.bias else "nobias", f"L{self.layers}",
            "bi" if self.bidirectional else "uni",
            "batch_first" if self.batch_first else "time_first", self.kind,
            "hx" if self.hx else "nohx"])

    @property
    def is_lstm(self):
        return self.cell.startswith("LSTM")

    @property
    def directions(self):
        return 2 if self.bidirectional else 1

    @property
    def out_size(self):  # P: what h carries
        return self.kwargs().get("proj_size", 0) or self.hidden_size

    def kwargs(self):
        """The cell's own constructor arguments (proj_size, nonlinearity)."""
        extra = dict(CELLS[self.cell][2])
        if "proj_size" in extra and self.proj_size is not None:
            extra["proj_size"] = self.proj_size
        return extra

    def seq_lengths(self):
        if self.lengths is not None:
            return list(self.lengths)
        if self.kind == "packed_sorted":
            return LENGTHS_SORTED
        if self.kind == "packed_unsorted":
            return LENGTHS_UNSORTED
        return [self.steps] * self.batch


def full_matrix():
    """Every cell x bias x layers 1-3 x direction x batch_first x input kind x hx."""
    return [Case(cell, bias, layers, bi, bf, kind, hx)
            for cell, bias, layers, bi, bf, kind, hx in itertools.product(
                CELLS, (True, False), (1, 2, 3), (False, True), (False, True), KINDS,
                (True, False))]


def ids(cases):
    return [case.id for case in cases]
