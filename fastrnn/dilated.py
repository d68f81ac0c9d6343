"""Dilated recurrent stacks (Chang et al., "Dilated Recurrent Neural Networks", 2017).

Layer l connects step t to step t - d_l instead of t - 1:

    h_t^(l) = cell(x_t^(l), h_{t - d_l}^(l)),

the first d_l steps starting from the initial state. Steps t = j, j + d, j + 2d, ... form
subsequence j of each sequence (its phase, j = t mod d), and a dilated layer is the same
cell run over the d interleaved subsequences of every sequence as d times as many
sequences of a d-th of the length. In the packed layout (functional.py) that is a
reordering of rows and a new batch_sizes: each layer gathers its input's rows into that
layout, runs the ordinary fused recurrence (functional.rnn), and scatters its output back,
so no step is spent on padding, for dense and packed input alike. Dense input needs no
reordering: its row t * B + b = (k * d + j) * B + b is already row k * (d * B) + (j * B + b),
step k of sequence j * B + b, so the layer runs on it as it is, with a new batch_sizes. A
reverse direction runs each subsequence from its end: h_t = cell(x_t, h_{t + d}).

States: one per subsequence. Layer l's initial and final states have torch.nn's shape for
one layer with d_l * B sequences, [D, d_l * B, H] (LSTM: h [D, d_l * B, P] and c), entry
j * B + b holding phase j of sequence b (a view [D, d_l, B, H] separates them); hx and the
returned state are tuples with one such state per layer, since the layers' sizes differ.
Unbatched input takes and returns the B = 1 shapes, [D, d_l, H]. A subsequence with no
steps (a sequence shorter than d_l) keeps its initial state.

torch.compile(fullgraph=True) traces dense input (with torch._dynamo.config.allow_rnn, as
for the layers); packed input compiles with graph breaks, since its layout is computed from
batch_sizes' values.
"""

import operator

import torch
from torch import nn
import torch.nn.functional as F
from torch.nn.utils.rnn import PackedSequence

from . import _onnx, functional
from ._transforms import refuse_differentiating_transform, refuse_torchscript
from .modules import _has_kernels, check_devices_and_dtypes, read_parameters


def dilation_map(batch_sizes, dilation):
    """The packed layout of a dilated layer, from its input's: (rows, batch_sizes, phases).

    batch_sizes: [T] int64 CPU, the input's (sequence b in packed order has the steps t with
    batch_sizes[t] > b). Subsequence (j, b) holds sequence b's steps t = j + k*d. The new
    layout's sequences are the non-empty subsequences, longest first (ties by j, then b);
    rows: [N] int64, row n of the new layout is input row rows[n]; phases: [S] int64, the
    subsequence of each new sequence as j * B + b."""
    steps, batch = batch_sizes.shape[0], int(batch_sizes[0])
    offsets = torch.cumsum(batch_sizes, 0) - batch_sizes  # [T] first row of each step
    lengths = (batch_sizes.unsqueeze(1) > torch.arange(batch)).sum(0)  # [B]
    phase = torch.arange(dilation).unsqueeze(1)  # [d, 1]
    sub_lengths = ((lengths - phase + dilation - 1) // dilation).clamp(min=0).flatten()  # [d*B]
    order = torch.argsort(sub_lengths, descending=True, stable=True)
    phases = order[sub_lengths[order] > 0]  # [S]
    sub_lengths = sub_lengths[phases]
    new_steps = int(sub_lengths[0])
    new_batch_sizes = (sub_lengths.unsqueeze(0) > torch.arange(new_steps).unsqueeze(1)).sum(1)
    k = torch.arange(new_steps).unsqueeze(1)  # [K, 1] the new layout's step
    t = (k * dilation + phases // batch).clamp(max=steps - 1)  # [K, S] the input's step
    active = sub_lengths.unsqueeze(0) > k  # [K, S]; row-major: the packed order
    rows = (offsets[t] + phases % batch)[active]
    return rows, new_batch_sizes, phases


def dense_dilation_map(steps, batch, dilation):
    """dilation_map for dense input ([T, B] rows, time-major): (None, batch_sizes, phases),
    None for rows that stay where they are."""
    new_steps = -(-steps // dilation)
    last = steps - (new_steps - 1) * dilation  # phases present in the last step
    batch_sizes = torch.full((new_steps,), dilation * batch, dtype=torch.long)
    batch_sizes[-1] = last * batch
    return None, batch_sizes, torch.arange(min(dilation, steps) * batch)


class _DilatedStack:
    """forward() and the dilations for a torch.nn.RNNBase subclass: torch.nn's constructor,
    parameters and state_dict, each layer run dilated."""

    def __init__(self, *args, dilations=None, **kwargs):
        super().__init__(*args, **kwargs)
        if dilations is None:
            dilations = tuple(2 ** layer for layer in range(self.num_layers))
        dilations = tuple(dilations)
        if len(dilations) != self.num_layers:
            raise ValueError(f"dilations must give one dilation per layer ({self.num_layers}), "
                             f"got {len(dilations)}")
        try:
            if any(isinstance(d, bool) for d in dilations):
                raise TypeError
            dilations = tuple(operator.index(d) for d in dilations)  # ints, numpy's too
        except TypeError:
            raise ValueError(f"dilations must be integers >= 1, got {dilations}") from None
        if any(d < 1 for d in dilations):
            raise ValueError(f"dilations must be integers >= 1, got {dilations}")
        self.dilations = dilations

    def extra_repr(self):
        return f"{super().extra_repr()}, dilations={self.dilations}"

    def __prepare_scriptable__(self):
        refuse_torchscript(type(self).__name__)

    def forward(self, input, hx=None):
        exporter = _onnx.active_exporter()
        if exporter == "torchscript":
            raise RuntimeError(f"fastrnn.{type(self).__name__} exports to ONNX only with "
                               "torch.onnx.export(dynamo=True)")
        if torch.jit.is_tracing():
            refuse_torchscript(type(self).__name__)
        is_packed = isinstance(input, PackedSequence)
        sorted_indices = unsorted_indices = None
        if is_packed:
            data, batch_sizes, sorted_indices, unsorted_indices = input
            is_batched, batch = True, int(batch_sizes[0])  # torch.compile: a graph break
        else:
            if input.dim() not in (2, 3):
                raise ValueError(f"{type(self).__name__}: Expected input to be 2D or 3D, got "
                                 f"{input.dim()}D instead")
            is_batched = input.dim() == 3
            x = input if is_batched else input.unsqueeze(0 if self.batch_first else 1)
            x = x.transpose(0, 1) if self.batch_first else x
            steps, batch = x.shape[0], x.shape[1]
            if steps == 0:
                raise RuntimeError("Expected sequence length to be larger than 0 in RNN")
            data = x.reshape(steps * batch, x.shape[2])
            batch_sizes = torch.full((steps,), batch, dtype=torch.long)
        if not _has_kernels(data):
            raise RuntimeError(f"fastrnn has no kernels for {data.device.type} tensors; "
                               f"{type(self).__name__} runs only where fastrnn's layers do")
        refuse_differentiating_transform(type(self).__name__)
        self.check_input(data, batch_sizes)
        weights = read_parameters(self, self._flat_weights_names)
        initial = self._initial_states(hx, data, batch, weights[0])
        if exporter:  # dynamo=True: ONNX's own recurrent nodes
            if is_packed:
                raise RuntimeError(f"fastrnn.{type(self).__name__}: PackedSequence input "
                                   "does not export to ONNX; pass padded input")
            output, final = _onnx.dilated_rnn(self, x, initial, weights)  # [T, B, D*H]
        else:
            output, final = self._layers(data, batch_sizes, batch, steps if not is_packed
                                         else None, sorted_indices, initial, weights)
        if is_packed:
            return PackedSequence(output, batch_sizes, sorted_indices, unsorted_indices), final
        output = output.view(steps, batch, output.shape[-1])
        output = output.transpose(0, 1) if self.batch_first else output
        return (output if is_batched else output.squeeze(0 if self.batch_first else 1)), final

    def _layers(self, data, batch_sizes, batch, steps, sorted_indices, initial, weights):
        """The stack on the rows data [N, I] (batch_sizes [T]; steps: T for dense input, None
        for packed); initial: _initial_states'. Returns the output rows [N, D*P] in data's
        order and per layer the final state(s)."""
        is_lstm, is_packed = self.mode == "LSTM", steps is None
        per_layer = len(weights) // self.num_layers
        layer_input, final = data, []
        caller_order = None if sorted_indices is None else sorted_indices.cpu()
        for layer, dilation in enumerate(self.dilations):
            if is_packed:
                rows, layer_batch_sizes, phases = dilation_map(batch_sizes, dilation)
                rows = rows.to(data.device)
                layer_input = layer_input.index_select(0, rows)
            else:
                rows, layer_batch_sizes, phases = dense_dilation_map(steps, batch, dilation)
            if caller_order is not None:  # states are indexed by the caller's order
                phases = phases // batch * batch + caller_order[phases % batch]
            phases = phases.to(data.device)
            h0, c0 = initial[layer]
            layer_input, h_n, c_n = functional.rnn(
                self.mode, layer_input, layer_batch_sizes, h0.index_select(1, phases),
                None if c0 is None else c0.index_select(1, phases),
                weights[layer * per_layer:(layer + 1) * per_layer], has_bias=self.bias,
                num_layers=1, bidirectional=self.bidirectional,
                proj_size=getattr(self, "proj_size", 0), packed=is_packed)
            if rows is not None:  # back to the input's order
                layer_input = torch.empty_like(layer_input).index_copy(0, rows, layer_input)
            # a subsequence with no steps keeps its initial state (in the results' dtype:
            # under autocast the layer's may differ from the states')
            h_n = h0.to(h_n.dtype).index_copy(1, phases, h_n)
            final.append((h_n, c0.to(c_n.dtype).index_copy(1, phases, c_n)) if is_lstm else h_n)
            if self.dropout > 0 and self.training and layer < self.num_layers - 1:
                layer_input = F.dropout(layer_input, self.dropout, training=True)
        return layer_input, tuple(final)

    def _initial_states(self, hx, data, batch, weight):
        """Per layer (h0, c0 or None), each [D, d_l * B, *], from hx or zeros, checked as
        torch.nn checks its layers' (data: the input's rows [N, I]; weight: a parameter)."""
        directions = 2 if self.bidirectional else 1
        hidden = self.hidden_size
        out = getattr(self, "proj_size", 0) or hidden
        if hx is not None and (not isinstance(hx, (tuple, list)) or len(hx) != self.num_layers):
            raise ValueError(f"{type(self).__name__}: hx must be a tuple with one state per "
                             f"layer ({self.num_layers})")
        check_devices_and_dtypes(data, None, None, weight)
        states = []
        for layer, dilation in enumerate(self.dilations):
            shape = (directions, dilation * batch)
            if hx is None:
                zeros = lambda size: data.new_zeros(*shape, size)
                states.append((zeros(out), zeros(hidden) if self.mode == "LSTM" else None))
                continue
            state = hx[layer]
            if self.mode == "LSTM":
                if not isinstance(state, (tuple, list)) or len(state) != 2:
                    raise ValueError(f"{type(self).__name__}: hx[{layer}] must be a tuple "
                                     "(h_0, c_0)")
                h0, c0 = state
                self.check_hidden_size(h0, (*shape, out), "Expected hidden[0] size {}, got {}")
                self.check_hidden_size(c0, (*shape, hidden), "Expected hidden[1] size {}, got {}")
            else:
                h0, c0 = state, None
                self.check_hidden_size(h0, (*shape, out))
            check_devices_and_dtypes(data, h0, c0, weight)
            states.append((h0, c0))
        return states


class DilatedLSTM(_DilatedStack, nn.LSTM):
    """A dilated stack of LSTM layers: torch.nn.LSTM's arguments and parameters, plus
    `dilations` (one int >= 1 per layer; default 1, 2, 4, ...). hx and the returned state:
    a tuple with one (h, c) per layer, h [D, d_l * B, P] and c [D, d_l * B, H] (see
    fastrnn.dilated)."""


class DilatedGRU(_DilatedStack, nn.GRU):
    """A dilated stack of GRU layers: torch.nn.GRU's arguments and parameters, plus
    `dilations`. hx and the returned state: a tuple with one h [D, d_l * B, H] per layer."""


class DilatedRNN(_DilatedStack, nn.RNN):
    """A dilated stack of Elman RNN layers (tanh or relu): torch.nn.RNN's arguments and
    parameters, plus `dilations`. hx and the returned state: a tuple with one
    h [D, d_l * B, H] per layer."""


torch.serialization.add_safe_globals([DilatedLSTM, DilatedGRU, DilatedRNN])
