"""What a user writes today for the structured recurrences fastrnn fuses: the baselines of
the benchmark's dilated kinds (grids.DILATED_KINDS), one class per kind (BASELINES).

Both take dense [T, B, I] input and return what fastrnn's dilated modules return: the output
[T, B, D*H] and per layer the final states [D, d*B, H] (entry j*B + b: phase j of sequence
b), from zeros; load_from(stack) copies a torch.nn/fastrnn stack's parameters (torch's
names: weight_ih_l{layer}[_reverse], ...) into them.
- CellLoopDilatedStack ("dilated"): the definition, h_t = cell(x_t, h_{t-d}), as a Python
  loop over steps calling, per layer and direction, a torch.nn cell (LSTMCell, GRUCell,
  RNNCell) on the whole batch, keeping one state per phase t mod d.
- InterleavedDilatedStack ("dilated_interleaved"): what published dilated-RNN code does,
  one torch.nn layer per dilation on the d subsequences laid side by side, [T/d, d*B, F]
  (T a multiple of every dilation here: that code pads time instead, which changes the
  reverse direction and the final states).
- ClockworkLoop ("clockwork"): the clockwork RNN as published code writes it, a Python
  loop over torch ops: each step the full pre-activation with W_hh masked to its allowed
  blocks, the active modules' units replaced (torch.where). It reads the parameters of the
  fastrnn.ClockworkRNN it is built on; returns the output [T, B, H] and h_n [1, B, H].
- VariantLoop ("variant"): an LSTM with peepholes and/or coupled gates, or a layer-
  normalised LSTM or GRU, as the papers write it, a Python loop over torch ops, the input
  product (and its norm) hoisted out of the loop. It reads the parameters of the
  fastrnn.VariantLSTM or VariantGRU (one layer) it is built on; returns the output
  [T, B, H] and the final state(s) [1, B, H].
"""

import torch
from torch import nn

from ..clockwork import allowed_blocks

_CELLS = {"LSTM": nn.LSTMCell, "GRU": nn.GRUCell, "RNN_TANH": nn.RNNCell,
          "RNN_RELU": nn.RNNCell}
_LAYERS = {"LSTM": nn.LSTM, "GRU": nn.GRU, "RNN_TANH": nn.RNN, "RNN_RELU": nn.RNN}


def _nonlinearity(cell):
    return {"nonlinearity": "relu" if cell == "RNN_RELU" else "tanh"} if (
        cell.startswith("RNN")) else {}


class CellLoopDilatedStack(nn.Module):
    def __init__(self, cell, input_size, hidden_size, dilations, bidirectional=False):
        super().__init__()
        self.mode, self.hidden_size, self.dilations = cell, hidden_size, tuple(dilations)
        self.directions = 2 if bidirectional else 1
        self.cells = nn.ModuleList(
            _CELLS[cell](input_size if layer == 0 else self.directions * hidden_size,
                         hidden_size, **_nonlinearity(cell))
            for layer in range(len(dilations)) for _ in range(self.directions))

    def load_from(self, stack):
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
                times, xs = range(steps), x.unbind(0)  # not x[t]: see states.py
                for t in (reversed(times) if direction else times):
                    phase_state[t % d] = cell(xs[t], phase_state[t % d])
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


class InterleavedDilatedStack(nn.Module):
    def __init__(self, cell, input_size, hidden_size, dilations, bidirectional=False):
        super().__init__()
        self.dilations = tuple(dilations)
        directions = 2 if bidirectional else 1
        self.layers = nn.ModuleList(
            _LAYERS[cell](input_size if layer == 0 else directions * hidden_size, hidden_size,
                          bidirectional=bidirectional, **_nonlinearity(cell))
            for layer in range(len(dilations)))

    def load_from(self, stack):
        for layer, module in enumerate(self.layers):  # layer l's parameters, renamed _l0
            for name, param in module.named_parameters():
                param.data.copy_(getattr(stack, name.replace("_l0", f"_l{layer}")).data)

    def forward(self, x):
        steps, batch = x.shape[0], x.shape[1]
        final = []
        for d, layer in zip(self.dilations, self.layers):
            if steps % d:
                raise ValueError(f"T={steps} is not a multiple of the dilation {d}")
            y, state = layer(x.reshape(steps // d, d * batch, x.shape[2]))  # [T/d, d*B, F]
            x = y.reshape(steps, batch, y.shape[2])
            final.append(state)
        return x, tuple(final)


class ClockworkLoop(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model, self.periods = model, model.periods
        self.register_buffer("mask", allowed_blocks(model.hidden_size, model.periods).float())

    def forward(self, x):
        m, k = self.model, self.model.hidden_size // len(self.periods)
        w_hh = m.weight_hh_l0 * self.mask
        gx = torch.addmm(m.bias_ih_l0 + m.bias_hh_l0, x.flatten(0, 1), m.weight_ih_l0.t())
        gx = gx.view(x.shape[0], x.shape[1], -1).unbind(0)  # not gx[t]: see states.py
        h, ys = x.new_zeros(x.shape[1], m.hidden_size), []
        for t in range(x.shape[0]):
            active = torch.tensor([t % p == 0 for p in self.periods], device=x.device)
            h = torch.where(active.repeat_interleave(k), torch.tanh(gx[t] + h @ w_hh.t()), h)
            ys.append(h)
        return torch.stack(ys), h.unsqueeze(0)


class VariantLoop(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        m = self.model
        if m.layer_norm:
            return self._layer_norm(x)
        coupled = m.coupled_gates
        gx = torch.addmm(m.bias_ih_l0 + m.bias_hh_l0, x.flatten(0, 1), m.weight_ih_l0.t())
        gx = gx.view(x.shape[0], x.shape[1], -1).unbind(0)  # not gx[t]: see states.py
        p = m.weight_ch_l0.chunk(2 if coupled else 3) if m.peepholes else None
        h = c = x.new_zeros(x.shape[1], m.hidden_size)
        ys = []
        for t in range(x.shape[0]):
            a = gx[t] + h @ m.weight_hh_l0.t()
            if coupled:
                a_i, a_g, a_o = a.chunk(3, dim=1)
            else:
                a_i, a_f, a_g, a_o = a.chunk(4, dim=1)
            i = torch.sigmoid(a_i + p[0] * c if p is not None else a_i)
            f = 1 - i if coupled else torch.sigmoid(a_f + p[1] * c if p is not None else a_f)
            c = f * c + i * torch.tanh(a_g)
            h = torch.sigmoid(a_o + p[-1] * c if p is not None else a_o) * torch.tanh(c)
            ys.append(h)
        return torch.stack(ys), (h.unsqueeze(0), c.unsqueeze(0))

    def _layer_norm(self, x):
        """Ba et al.'s layer-normalised LSTM or GRU with F.layer_norm, as such models are
        written in PyTorch."""
        m, ln = self.model, nn.functional.layer_norm
        gates = m.weight_ih_l0.shape[0]
        gx = ln(x.flatten(0, 1) @ m.weight_ih_l0.t(), (gates,), m.ln_weight_ih_l0,
                m.ln_bias_ih_l0) + m.bias_ih_l0
        gx = gx.view(x.shape[0], x.shape[1], -1).unbind(0)  # not gx[t]: see states.py
        h = c = x.new_zeros(x.shape[1], m.hidden_size)
        ys = []
        for t in range(x.shape[0]):
            gh = ln(h @ m.weight_hh_l0.t(), (gates,), m.ln_weight_hh_l0, m.ln_bias_hh_l0)
            if m.mode == "GRU":
                x_r, x_z, x_n = gx[t].chunk(3, dim=1)
                h_r, h_z, h_n = (gh + m.bias_hh_l0).chunk(3, dim=1)
                r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
                h = (1 - z) * torch.tanh(x_n + r * h_n) + z * h
            else:
                i, f, g, o = (gx[t] + gh + m.bias_hh_l0).chunk(4, dim=1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(ln(c, (m.hidden_size,), m.ln_weight_c_l0,
                                                     m.ln_bias_c_l0))
            ys.append(h)
        if m.mode == "GRU":
            return torch.stack(ys), h.unsqueeze(0)
        return torch.stack(ys), (h.unsqueeze(0), c.unsqueeze(0))


BASELINES = {"dilated": CellLoopDilatedStack, "dilated_interleaved": InterleavedDilatedStack}
BASELINE_NAMES = {"dilated": "torch-cell-loop", "dilated_interleaved": "torch-layers-interleaved",
                  "clockwork": "torch-ops-loop", "variant": "torch-ops-loop"}
