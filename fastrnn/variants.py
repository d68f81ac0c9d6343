"""LSTM variants from the literature, fused: peephole connections and coupled input and
forget gates, options of one layer class and one cell class.

With x W_ih^T + b_ih and h_{t-1} W_hh^T + b_hh summed into each gate's pre-activation (…):

  peepholes (Gers & Schmidhuber, 2000; ONNX's LSTM with its input P):
    i = σ(… + p_i ⊙ c_{t-1})    f = σ(… + p_f ⊙ c_{t-1})    g = tanh(…)
    c_t = f ⊙ c_{t-1} + i ⊙ g   o = σ(… + p_o ⊙ c_t)        h_t = o ⊙ tanh(c_t)
    (the output gate looks at the new cell); p_i, p_f, p_o learned vectors of H;
  coupled input and forget gates, "CIFG" (Greff et al., "LSTM: A Search Space Odyssey",
    2017; ONNX's LSTM with input_forget=1): no forget-gate weights, f = 1 - i, so the gate
    blocks are i, g, o and weight_ih is [3H, I]. With peepholes only p_i and p_o exist.

Why options of one class rather than a class per variant: the variants combine (ONNX's
LSTM has both switches, and Greff et al. study them as switches on one LSTM), and one class
keeps one parameter scheme, one docstring and one constructor, whose options a saved
configuration names. Without options VariantLSTM is torch.nn.LSTM's math and parameters.
"""

import math

import torch
from torch import nn

from . import _onnx, functional
from ._ops import CELL_KIND, lstm_variant_cell
from .cells import _WEIGHTS, _FusedCell
from .modules import _FusedRecurrence, _has_kernels


class _Variant:
    """What VariantLSTM and VariantLSTMCell share: the options, the parameters they change
    (coupled gates: three gate blocks; peepholes: weight_ch vectors) and the refusals."""

    def _set_variant(self, peepholes, coupled_gates, groups, device, dtype):
        """groups: per layer and direction, the names of its torch.nn parameters (the weight
        and bias names hold the gate blocks) and the suffix of its own names ("_l0", ...).
        The parameters it replaces or adds start as torch.nn's do, uniform in
        ±1/sqrt(hidden_size), drawn after torch.nn's constructor drew its own: without
        options the module is torch.nn's, random stream included."""
        for name, value in (("peepholes", peepholes), ("coupled_gates", coupled_gates)):
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be a bool, got {value!r}")
        self.peepholes, self.coupled_gates = peepholes, coupled_gates
        bound = 1 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0.0

        def new(*shape):  # torch.nn's initialisation
            return nn.Parameter(nn.init.uniform_(
                torch.empty(*shape, device=device, dtype=dtype), -bound, bound))

        names = []
        for group, suffix in groups:
            if coupled_gates:  # i, g, o: torch.nn's blocks less the forget gate's
                for name in group:
                    if name.startswith(("weight_ih", "weight_hh", "bias_ih", "bias_hh")):
                        old = getattr(self, name)
                        setattr(self, name, new(3 * old.shape[0] // 4, *old.shape[1:]))
            peephole = f"weight_ch{suffix}"
            if peepholes:
                self.register_parameter(  # p_i, p_f, p_o (coupled: p_i, p_o)
                    peephole, new((2 if coupled_gates else 3) * self.hidden_size))
            names.append(list(group) + ([peephole] if peepholes else []))
        return names

    @property
    def _variant(self):
        return functional.LSTMVariant(self.peepholes, self.coupled_gates)

    def _is_variant(self):
        # (torch.nn's constructor flattens the parameters before the options are set)
        return getattr(self, "peepholes", False) or getattr(self, "coupled_gates", False)

    def _refuse_without_kernels(self, device, exports=False):
        """exports: whether the module exports through torch.onnx.export(dynamo=True)."""
        name = type(self).__name__
        exporter = _onnx.active_exporter()
        if exporter and not (exports and exporter == "dynamo"):
            raise RuntimeError(
                f"fastrnn.{name} with peepholes or coupled gates exports to ONNX only as a "
                "layer (VariantLSTM) with torch.onnx.export(dynamo=True): ONNX's LSTM with "
                "P and input_forget" if exports else
                f"fastrnn.{name} with peepholes or coupled gates has no ONNX translation yet")
        if not _has_kernels(device):
            raise RuntimeError(f"fastrnn.{name} with peepholes or coupled gates has no "
                               f"kernels for {device.type} tensors")

    def _variant_repr(self):
        return f", peepholes={self.peepholes}, coupled_gates={self.coupled_gates}"


class VariantLSTM(_Variant, _FusedRecurrence, nn.LSTM):
    """An LSTM layer stack with peepholes and/or coupled input and forget gates (the module
    docstring has the equations): torch.nn.LSTM's constructor (num_layers, bias,
    batch_first, dropout, bidirectional, proj_size, device, dtype) plus the keyword options
    `peepholes` and `coupled_gates` (both False: torch.nn.LSTM itself).

    Parameters, per layer l and direction (suffix _reverse), in torch.nn's scheme:
    weight_ih_l{l} [G*H, I], weight_hh_l{l} [G*H, P], bias_ih_l{l} and bias_hh_l{l} [G*H],
    weight_hr_l{l} [P, H] (proj_size P), with G = 4 gate blocks i, f, g, o, or 3 (i, g, o)
    with coupled gates; and with peepholes weight_ch_l{l} [3*H] holding p_i, p_f, p_o
    (coupled: [2*H], p_i, p_o). Every parameter starts as torch.nn's do, uniform in
    ±1/sqrt(H). Input, states and outputs as torch.nn.LSTM's: [T, B, I] (batch_first
    [B, T, I]), unbatched [T, I], PackedSequence sorted or not, optional (h_0, c_0).

    CPU and CUDA (the per-step path; the persistent kernels run torch.nn's four cells only);
    torch.compile, autocast (the results' dtypes those torch.nn.LSTM gives on the same
    input), state_dict. With a variant option set, ONNX export and devices without
    fastrnn's kernels raise RuntimeError: torch.nn has no such layer to fall back on."""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, proj_size=0, device=None, dtype=None, *,
                 peepholes=False, coupled_gates=False):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, proj_size, device, dtype)
        directions = 2 if bidirectional else 1
        groups = [(names, f"_l{k // directions}" + ("_reverse" if k % directions else ""))
                  for k, names in enumerate(self._all_weights)]
        self._all_weights = self._set_variant(peepholes, coupled_gates, groups, device, dtype)
        self._flat_weights_names = [name for group in self._all_weights for name in group]
        self._init_flat_weights()

    def flatten_parameters(self):
        """cuDNN's weight layout, for torch.nn.LSTM's math only: not for a variant."""
        if not self._is_variant():
            super().flatten_parameters()

    def forward(self, input, hx=None):
        if self._is_variant():
            self._refuse_without_kernels(
                (input.data if isinstance(input, nn.utils.rnn.PackedSequence) else input).device,
                exports=True)
        return super().forward(input, hx)

    def _recurrence(self, data, batch_sizes, h0, c0, weights, is_packed):
        return functional.rnn(
            "LSTM", data, batch_sizes, h0, c0, weights, has_bias=self.bias,
            num_layers=self.num_layers, bidirectional=self.bidirectional,
            proj_size=self.proj_size, dropout=float(self.dropout), training=self.training,
            packed=is_packed, variant=self._variant if self._is_variant() else None)

    def extra_repr(self):
        return super().extra_repr() + self._variant_repr()


class VariantLSTMCell(_Variant, _FusedCell, nn.LSTMCell):
    """One step of VariantLSTM: torch.nn.LSTMCell's constructor (input_size, hidden_size,
    bias, device, dtype) plus the keyword options `peepholes` and `coupled_gates`.
    Parameters weight_ih [G*H, I], weight_hh [G*H, H], bias_ih, bias_hh [G*H] and with
    peepholes weight_ch ([3*H], or [2*H] with coupled gates), as VariantLSTM's. Input [B, I]
    or unbatched [I], optional (h, c), returns (h', c') as torch.nn.LSTMCell does. A call is
    one fused op (fastrnn::cell_forward), as fastrnn.LSTMCell's."""

    _NAME = "LSTMCell"

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None, *,
                 peepholes=False, coupled_gates=False):
        super().__init__(input_size, hidden_size, bias, device, dtype)
        names = _WEIGHTS if bias else _WEIGHTS[:2]
        self._set_variant(peepholes, coupled_gates, [(names, "")], device, dtype)

    def _cell(self):
        return CELL_KIND[lstm_variant_cell(self.peepholes, self.coupled_gates)]

    def _weight_names(self):
        return _WEIGHTS + (("weight_ch",) if self.peepholes else ())

    def forward(self, input, hx=None):
        if self._is_variant():
            self._refuse_without_kernels(input.device)
            if hx is not None and hx[0].dtype != hx[1].dtype:
                raise RuntimeError(f"fastrnn.VariantLSTMCell: h and c must have the same "
                                   f"dtype, got {hx[0].dtype} and {hx[1].dtype}")
        return super().forward(input, hx)

    def extra_repr(self):
        return super().extra_repr() + self._variant_repr()


# As for the layers (modules.py): a model saved whole loads under torch.load's defaults.
torch.serialization.add_safe_globals([VariantLSTM, VariantLSTMCell])
