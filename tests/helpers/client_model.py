"""A client's model module, for tests/test_weights_only_load.py and tests/test_cells_api.py:
a language model shaped like PyTorch's word_language_model, a model that runs a cell over a
sequence, and what the client allowlists when it loads one saved whole. The fresh-process
tests import this module as a client program imports its own."""

import torch
from torch import nn

# A client's model module imports fastrnn, as does any program whose models hold fastrnn's
# modules: the fresh process gets fastrnn through this import only.
import fastrnn  # noqa: F401

VOCAB, EMBED, HIDDEN, LAYERS, T, B = 11, 4, 5, 2, 6, 3


class ClientModel(nn.Module):
    """A language model shaped like word_language_model's RNNModel: embedding, recurrence,
    dropout, decoder."""

    def __init__(self, rnn_cls, **rnn_kwargs):
        super().__init__()
        self.encoder = nn.Embedding(VOCAB, EMBED, dtype=torch.float64)
        self.rnn = rnn_cls(EMBED, HIDDEN, LAYERS, dropout=0.5, bidirectional=True,
                           dtype=torch.float64, **rnn_kwargs)
        self.drop = nn.Dropout(0.5)
        out = 2 * (rnn_kwargs.get("proj_size") or HIDDEN)
        self.decoder = nn.Linear(out, VOCAB, dtype=torch.float64)

    def forward(self, tokens):  # tokens: [T, B] -> logits: [T, B, VOCAB]
        output, _ = self.rnn(self.drop(self.encoder(tokens)))
        return self.decoder(self.drop(output))


# What the client allowlists: its own class and torch.nn's, none of fastrnn's.
CLIENT_GLOBALS = [ClientModel, nn.LSTM, nn.GRU, nn.RNN, nn.Linear, nn.Dropout, nn.Embedding]


def tokens():
    return torch.randint(0, VOCAB, (T, B), generator=torch.Generator().manual_seed(1))


class ClientCellModel(nn.Module):
    """A model around a cell: a linear encoder, the cell called at each step with its state
    carried, a linear decoder of every step's h."""

    def __init__(self, cell_cls, **cell_kwargs):
        super().__init__()
        self.encoder = nn.Linear(EMBED, EMBED, dtype=torch.float64)
        self.cell = cell_cls(EMBED, HIDDEN, dtype=torch.float64, **cell_kwargs)
        self.decoder = nn.Linear(HIDDEN, VOCAB, dtype=torch.float64)

    def forward(self, features):  # features: [T, B, EMBED] -> logits: [T, B, VOCAB]
        state, hs = None, []
        for x in torch.tanh(self.encoder(features)):  # x: [B, EMBED]
            state = self.cell(x, state)
            hs.append(state[0] if isinstance(state, tuple) else state)  # [B, HIDDEN]
        return self.decoder(torch.stack(hs))


# What the client allowlists for it: its own class and torch.nn's, none of fastrnn's.
CLIENT_CELL_GLOBALS = [ClientCellModel, nn.LSTMCell, nn.GRUCell, nn.RNNCell, nn.Linear]


def features():
    """A fixed input for ClientCellModel: [T, B, EMBED]."""
    return torch.randn(T, B, EMBED, generator=torch.Generator().manual_seed(1),
                       dtype=torch.float64)
