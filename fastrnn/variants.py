"""Recurrent variants from the literature, fused: the LSTM's peephole connections and
coupled input and forget gates, and layer-normalised LSTMs and GRUs, options of a layer
class and a cell class each.

With x W_ih^T + b_ih and h_{t-1} W_hh^T + b_hh summed into each gate's pre-activation (…):

  peepholes (Gers & Schmidhuber, 2000; ONNX's LSTM with its input P):
    i = σ(… + p_i ⊙ c_{t-1})    f = σ(… + p_f ⊙ c_{t-1})    g = tanh(…)
    c_t = f ⊙ c_{t-1} + i ⊙ g   o = σ(… + p_o ⊙ c_t)        h_t = o ⊙ tanh(c_t)
    (the output gate looks at the new cell); p_i, p_f, p_o learned vectors of H;
  coupled input and forget gates, "CIFG" (Greff et al., "LSTM: A Search Space Odyssey",
    2017; ONNX's LSTM with input_forget=1): no forget-gate weights, f = 1 - i, so the gate
    blocks are i, g, o and weight_ih is [3H, I]. With peepholes only p_i and p_o exist.

  layer normalisation (Ba, Kiros & Hinton, "Layer Normalization", 2016), for the LSTM and
    the GRU: the input and recurrent products normalised apart, before the biases,
      LN(v; γ, β) = γ ⊙ (v - mean(v)) / sqrt(var(v) + 1e-5) + β over each row's G*H values,
      LSTM: a = LN(x W_ih^T; γ_ih, β_ih) + LN(h_{t-1} W_hh^T; γ_hh, β_hh) + b_ih + b_hh,
            i, f, g, o and c_t as above (no peepholes), h_t = o ⊙ tanh(LN(c_t; γ_c, β_c));
      GRU:  the gates of torch.nn.GRU on LN(x W_ih^T; γ_ih, β_ih) + b_ih and
            LN(h_{t-1} W_hh^T; γ_hh, β_hh) + b_hh, so b_hn stays inside r ⊙ (.);
    γ starts at 1 and β at 0. It takes neither peepholes nor coupled gates.

Why options of one class rather than a class per variant: the variants combine (ONNX's
LSTM has both switches, and Greff et al. study them as switches on one LSTM), and one class
keeps one parameter scheme, one docstring and one constructor, whose options a saved
configuration names. Without options VariantLSTM is torch.nn.LSTM's math and parameters, and
VariantGRU torch.nn.GRU's.
"""

import math

import torch
from torch import nn

from . import _onnx, functional
from ._cell_ops import CELL_KIND
from ._ops import lstm_variant_cell
from .cells import _WEIGHTS, _FusedCell
from ._transforms import refuse_differentiating_transform, refuse_torchscript
from .modules import _FusedRecurrence, _has_kernels


class _Variant:
    """What the variant layers and cells share: the options, the parameters they change
    (coupled gates: three gate blocks; peepholes: weight_ch vectors; layer norm: the ln_*
    vectors) and the refusals."""

    def _set_variant(self, groups, device, dtype, *, peepholes=False, coupled_gates=False,
                     layer_norm=False):
        """groups: per layer and direction, the names of its torch.nn parameters (the weight
        and bias names hold the gate blocks) and the suffix of its own names ("_l0", ...).
        The parameters it replaces or adds start as torch.nn's do, uniform in
        ±1/sqrt(hidden_size), drawn after torch.nn's constructor drew its own (without
        options the module is torch.nn's, random stream included); the norms' γ at 1 and β at
        0, drawing nothing."""
        for name, value in (("peepholes", peepholes), ("coupled_gates", coupled_gates),
                            ("layer_norm", layer_norm)):
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be a bool, got {value!r}")
        if layer_norm and (peepholes or coupled_gates):
            raise ValueError("layer_norm does not combine with peepholes or coupled_gates")
        self.peepholes, self.coupled_gates, self.layer_norm = peepholes, coupled_gates, layer_norm
        bound = 1 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0.0
        empty = lambda size: torch.empty(size, device=device, dtype=dtype)

        def new(*shape):  # torch.nn's initialisation
            return nn.Parameter(nn.init.uniform_(torch.empty(*shape, device=device, dtype=dtype),
                                                 -bound, bound))

        names = []
        for group, suffix in groups:
            if coupled_gates:  # i, g, o: torch.nn's blocks less the forget gate's
                for name in group:
                    if name.startswith(("weight_ih", "weight_hh", "bias_ih", "bias_hh")):
                        old = getattr(self, name)
                        setattr(self, name, new(3 * old.shape[0] // 4, *old.shape[1:]))
            added = []
            if peepholes:  # p_i, p_f, p_o (coupled: p_i, p_o)
                added.append((f"weight_ch{suffix}",
                              new((2 if coupled_gates else 3) * self.hidden_size)))
            if layer_norm:  # γ, β of the input and recurrent products [G*H], the LSTM's c [H]
                gates = getattr(self, group[0]).shape[0]
                for name in functional.LAYER_NORMS[self._MODE]:
                    size = self.hidden_size if name.endswith("_c") else gates
                    start = 1.0 if "weight" in name else 0.0
                    added.append((name + suffix, nn.Parameter(empty(size).fill_(start))))
            for name, parameter in added:
                self.register_parameter(name, parameter)
            names.append(list(group) + [name for name, _ in added])
        return names

    def reset_parameters(self):
        """torch.nn's reinitialisation (uniform in ±1/sqrt(hidden_size), every parameter),
        then the norms' γ at 1 and β at 0 again."""
        super().reset_parameters()
        with torch.no_grad():
            for name, parameter in self.named_parameters():
                if name.startswith("ln_"):
                    parameter.fill_(1.0 if name.startswith("ln_weight") else 0.0)

    @property
    def _variant(self):
        return functional.Variant(self.peepholes, self.coupled_gates, self.layer_norm)

    def _is_variant(self):
        # (torch.nn's constructor flattens the parameters before the options are set)
        return any(getattr(self, name, False)
                   for name in ("peepholes", "coupled_gates", "layer_norm"))

    def _refuse_without_kernels(self, data, exports=False):
        """data: the input tensor (a PackedSequence's data). exports: whether the module
        exports through torch.onnx.export(dynamo=True) (the layers: fastrnn._onnx)."""
        name = type(self).__name__
        exporter = _onnx.active_exporter()
        if exporter and not (exports and exporter == "dynamo"):
            raise RuntimeError(
                f"fastrnn.{name} with {self._options()} exports to ONNX only as a layer "
                "(VariantLSTM, VariantGRU) with torch.onnx.export(dynamo=True)" if exports else
                f"fastrnn.{name} with {self._options()} has no ONNX translation yet")
        if torch.jit.is_tracing():
            refuse_torchscript(f"{name} with {self._options()}")
        if not _has_kernels(data):
            raise RuntimeError(f"fastrnn.{name} with {self._options()} has no kernels for "
                               f"{data.device.type} tensors")
        refuse_differentiating_transform(name)

    def __prepare_scriptable__(self):
        """torch.nn's twin for TorchScript (modules.torch_nn_twin) where no option is set."""
        if self._is_variant():
            refuse_torchscript(f"{type(self).__name__} with {self._options()}")
        return super().__prepare_scriptable__()

    def _options(self):
        return "layer norm" if self.layer_norm else "peepholes or coupled gates"

    def _variant_repr(self):
        if self._MODE == "GRU":
            return f", layer_norm={self.layer_norm}"
        return (f", peepholes={self.peepholes}, coupled_gates={self.coupled_gates}, "
                f"layer_norm={self.layer_norm}")


class _VariantLayer(_Variant, _FusedRecurrence):
    """forward() and the rest for VariantLSTM and VariantGRU."""

    def _set_layer_variant(self, device, dtype, **options):
        directions = 2 if self.bidirectional else 1
        groups = [(names, f"_l{k // directions}" + ("_reverse" if k % directions else ""))
                  for k, names in enumerate(self._all_weights)]
        self._all_weights = self._set_variant(groups, device, dtype, **options)
        self._flat_weights_names = [name for group in self._all_weights for name in group]
        self._init_flat_weights()

    def flatten_parameters(self):
        """cuDNN's weight layout, for torch.nn's math only: not for a variant."""
        if not self._is_variant():
            super().flatten_parameters()

    def forward(self, input, hx=None):
        if self._is_variant():
            self._refuse_without_kernels(
                input.data if isinstance(input, nn.utils.rnn.PackedSequence) else input,
                exports=True)
        return super().forward(input, hx)

    def _recurrence(self, data, batch_sizes, h0, c0, weights, is_packed):
        return functional.rnn(
            self.mode, data, batch_sizes, h0, c0, weights, has_bias=self.bias,
            num_layers=self.num_layers, bidirectional=self.bidirectional,
            proj_size=getattr(self, "proj_size", 0), dropout=float(self.dropout),
            training=self.training, packed=is_packed,
            variant=self._variant if self._is_variant() else None)

    def extra_repr(self):
        return super().extra_repr() + self._variant_repr()


class _VariantCell(_Variant, _FusedCell):
    """forward() and the rest for VariantLSTMCell and VariantGRUCell: a call is one fused
    op (fastrnn::cell_forward), as fastrnn.LSTMCell's, or with layer norm one step of the
    layer's ops."""

    def _set_cell_variant(self, device, dtype, **options):
        names = _WEIGHTS if self.bias else _WEIGHTS[:2]
        self._set_variant([(names, "")], device, dtype, **options)

    def _cell(self):
        if self._MODE == "GRU" or self.layer_norm:  # the number names the result dtypes
            return CELL_KIND[self._MODE]           # under autocast: the base cell's
        return CELL_KIND[lstm_variant_cell(self.peepholes, self.coupled_gates)]

    def _weight_names(self):
        return _WEIGHTS + (("weight_ch",) if self.peepholes else ()) + (
            functional.LAYER_NORMS[self._MODE] if self.layer_norm else ())

    def _step(self, cell, x, h, c, weights):
        if not self.layer_norm:
            return _FusedCell._step(cell, x, h, c, weights)
        batch_sizes = torch.tensor([x.shape[0]], dtype=torch.long)
        _, h_new, c_new = functional._direction(self._MODE, x, batch_sizes, h, c, weights,
                                                self.bias, False, False, self._variant)
        return h_new, c_new if c_new is not None else h_new.new_empty(0)

    def _plain_call(self, input, hx):
        return NotImplemented if self._is_variant() else super()._plain_call(input, hx)

    def forward(self, input, hx=None):
        if self._is_variant():
            self._refuse_without_kernels(input)
            if self._MODE == "LSTM" and hx is not None and hx[0].dtype != hx[1].dtype:
                raise RuntimeError(f"fastrnn.{type(self).__name__}: h and c must have the "
                                   f"same dtype, got {hx[0].dtype} and {hx[1].dtype}")
        return super().forward(input, hx)

    def extra_repr(self):
        return super().extra_repr() + self._variant_repr()


class VariantLSTM(_VariantLayer, nn.LSTM):
    """An LSTM layer stack with peepholes and/or coupled input and forget gates, or with
    layer normalisation (the module docstring has the equations): torch.nn.LSTM's
    constructor (num_layers, bias, batch_first, dropout, bidirectional, proj_size, device,
    dtype) plus the keyword options `peepholes`, `coupled_gates` and `layer_norm` (all
    False: torch.nn.LSTM itself).

    Parameters, per layer l and direction (suffix _reverse), in torch.nn's scheme:
    weight_ih_l{l} [G*H, I], weight_hh_l{l} [G*H, P], bias_ih_l{l} and bias_hh_l{l} [G*H],
    weight_hr_l{l} [P, H] (proj_size P), with G = 4 gate blocks i, f, g, o, or 3 (i, g, o)
    with coupled gates; with peepholes weight_ch_l{l} [3*H] holding p_i, p_f, p_o
    (coupled: [2*H], p_i, p_o); with layer norm ln_weight_ih_l{l}, ln_bias_ih_l{l},
    ln_weight_hh_l{l}, ln_bias_hh_l{l} [4*H] (γ and β of the input and recurrent products)
    and ln_weight_c_l{l}, ln_bias_c_l{l} [H] (of the cell state). Weights and biases start
    as torch.nn's do, uniform in ±1/sqrt(H); the norms' γ at 1, β at 0. Input, states and
    outputs as torch.nn.LSTM's: [T, B, I] (batch_first [B, T, I]), unbatched [T, I],
    PackedSequence sorted or not, optional (h_0, c_0).

    CPU and CUDA (the per-step path; the persistent kernels run torch.nn's four cells only);
    torch.compile, autocast (the results' dtypes those torch.nn.LSTM gives on the same
    input), state_dict. With a variant option set, devices without fastrnn's kernels raise
    RuntimeError (torch.nn has no such layer to fall back on), and so does ONNX export but
    with torch.onnx.export(dynamo=True) of peepholes or coupled gates."""

    _MODE = "LSTM"

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, proj_size=0, device=None, dtype=None, *,
                 peepholes=False, coupled_gates=False, layer_norm=False):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, proj_size, device, dtype)
        self._set_layer_variant(device, dtype, peepholes=peepholes, coupled_gates=coupled_gates,
                                layer_norm=layer_norm)


class VariantGRU(_VariantLayer, nn.GRU):
    """A GRU layer stack with layer normalisation (the module docstring has the equations):
    torch.nn.GRU's constructor (num_layers, bias, batch_first, dropout, bidirectional,
    device, dtype) plus the keyword option `layer_norm` (False: torch.nn.GRU itself).
    Parameters: torch.nn.GRU's, and with layer norm per layer l and direction
    ln_weight_ih_l{l}, ln_bias_ih_l{l}, ln_weight_hh_l{l}, ln_bias_hh_l{l} [3*H]: γ (at 1)
    and β (at 0) of the input and recurrent products. Input, states and outputs, devices,
    compile, autocast and export as VariantLSTM's."""

    _MODE = "GRU"

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, device=None, dtype=None, *,
                 layer_norm=False):
        super().__init__(input_size, hidden_size, num_layers, bias=bias,
                         batch_first=batch_first, dropout=dropout, bidirectional=bidirectional,
                         device=device, dtype=dtype)
        self._set_layer_variant(device, dtype, layer_norm=layer_norm)


class VariantLSTMCell(_VariantCell, nn.LSTMCell):
    """One step of VariantLSTM: torch.nn.LSTMCell's constructor (input_size, hidden_size,
    bias, device, dtype) plus the keyword options `peepholes`, `coupled_gates` and
    `layer_norm`. Parameters weight_ih [G*H, I], weight_hh [G*H, H], bias_ih, bias_hh [G*H],
    with peepholes weight_ch ([3*H], or [2*H] with coupled gates), with layer norm
    ln_weight_ih, ln_bias_ih, ln_weight_hh, ln_bias_hh [4*H], ln_weight_c, ln_bias_c [H], as
    VariantLSTM's. Input [B, I] or unbatched [I], optional (h, c), returns (h', c') as
    torch.nn.LSTMCell does."""

    _NAME, _MODE = "LSTMCell", "LSTM"

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None, *,
                 peepholes=False, coupled_gates=False, layer_norm=False):
        super().__init__(input_size, hidden_size, bias, device, dtype)
        self._set_cell_variant(device, dtype, peepholes=peepholes, coupled_gates=coupled_gates,
                               layer_norm=layer_norm)


class VariantGRUCell(_VariantCell, nn.GRUCell):
    """One step of VariantGRU: torch.nn.GRUCell's constructor (input_size, hidden_size, bias,
    device, dtype) plus the keyword option `layer_norm`. Parameters torch.nn.GRUCell's, with
    layer norm ln_weight_ih, ln_bias_ih, ln_weight_hh, ln_bias_hh [3*H], as VariantGRU's.
    Input [B, I] or unbatched [I], optional h, returns h' as torch.nn.GRUCell does."""

    _NAME, _MODE = "GRUCell", "GRU"

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None, *,
                 layer_norm=False):
        super().__init__(input_size, hidden_size, bias, device, dtype)
        self._set_cell_variant(device, dtype, layer_norm=layer_norm)


# As for the layers (modules.py): a model saved whole loads under torch.load's defaults.
torch.serialization.add_safe_globals([VariantLSTM, VariantGRU, VariantLSTMCell, VariantGRUCell])
