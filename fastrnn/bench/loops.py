"""What a user writes today for the structured recurrences fastrnn fuses: the baselines of
the benchmark's "dilated" kind (grids.KINDS).

CellLoopDilatedStack is a dilated stack (fastrnn.dilated) as the definition reads,
h_t = cell(x_t, h_{t-d}): per layer and direction a torch.nn cell (LSTMCell, GRUCell,
RNNCell) called once per step on the whole batch in a Python loop, keeping one state per
phase t mod d. It takes dense [T, B, I] input and returns what fastrnn's dilated modules
return: the output [T, B, D*H] and per layer the final states [D, d*B, H] (entry j*B + b:
phase j of sequence b), from zeros.
"""

import torch
from torch import nn

_CELLS = {"LSTM": nn.LSTMCell, "GRU": nn.GRUCell, "RNN_TANH": nn.RNNCell,
          "RNN_RELU": nn.RNNCell}


class CellLoopDilatedStack(nn.Module):
    def __init__(self, cell, input_size, hidden_size, dilations, bidirectional=False):
        super().__init__()
        self.mode, self.hidden_size, self.dilations = cell, hidden_size, tuple(dilations)
        self.directions = 2 if bidirectional else 1
        kwargs = {"nonlinearity": "relu" if cell == "RNN_RELU" else "tanh"} if (
            cell.startswith("RNN")) else {}
        self.cells = nn.ModuleList(
            _CELLS[cell](input_size if layer == 0 else self.directions * hidden_size,
                         hidden_size, **kwargs)
            for layer in range(len(dilations)) for _ in range(self.directions))

    def load_from(self, stack):
        """Copies the parameters of a torch.nn/fastrnn stack of the same sizes (torch's
        names: weight_ih_l{layer}[_reverse], ...) into the cells."""
        for index, cell in enumerate(self.cells):
            layer, direction = divmod(index, self.directions)
            suffix = f"_l{layer}" + ("_reverse" if direction else "")
            for name, param in cell.named_parameters():
                param.data.copy_(getattr(stack, name + suffix).data)

    def forward(self, x):
        steps, batch = x.shape[0], x.shape[1]
        is_lstm = self.mode == "LSTM"
        final = []
        for layer, d in enumerate(self.dilations):
            outputs, states = [], []
            for direction in range(self.directions):
                cell = self.cells[layer * self.directions + direction]
                zeros = x.new_zeros(batch, self.hidden_size)
                phase_state = [(zeros, zeros) if is_lstm else zeros for _ in range(d)]
                ys = [None] * steps
                times = range(steps)
                for t in (reversed(times) if direction else times):
                    phase_state[t % d] = cell(x[t], phase_state[t % d])
                    ys[t] = phase_state[t % d][0] if is_lstm else phase_state[t % d]
                outputs.append(torch.stack(ys))
                states.append(phase_state)
            x = torch.cat(outputs, dim=2)
            h_n = torch.stack([torch.cat([s[0] if is_lstm else s for s in per_direction])
                               for per_direction in states])  # [D, d*B, H]
            if is_lstm:
                c_n = torch.stack([torch.cat([s[1] for s in per_direction])
                                   for per_direction in states])
                final.append((h_n, c_n))
            else:
                final.append(h_n)
        return x, tuple(final)
