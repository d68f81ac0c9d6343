"""fastrnn.LSTM, GRU and RNN: torch.nn's modules with the recurrence run by fastrnn's ops.

Each class subclasses its torch.nn twin, so the constructor, its validation, the parameters
(names, shapes, order, gate order, initialisation), state_dict, repr, pickling and
parametrizations are torch's own; only forward() differs, and it accepts and returns what
torch.nn's forward does.
"""

import warnings

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from . import _onnx, functional
from ._ops import packed_zeros
from ._transforms import refuse_differentiating_transform, refuse_torchscript, runs_torch_nn


class _FusedRecurrence:
    """forward() for a torch.nn.RNNBase subclass, running functional.rnn."""

    def forward(self, input, hx=None):
        data = input.data if isinstance(input, PackedSequence) else input
        exporter = _onnx.active_exporter()
        if exporter == "torchscript":  # torch.nn's graph: ONNX LSTM, GRU, RNN nodes
            if getattr(self, "proj_size", 0) > 0:
                raise RuntimeError(
                    "fastrnn.LSTM: an LSTM with proj_size exports to ONNX only with "
                    "torch.onnx.export(dynamo=True), as an ONNX Scan; the TorchScript exporter "
                    "(dynamo=False) has no translation for it (nor for torch.nn.LSTM's)")
            return super().forward(input, hx)
        if not _has_kernels(data):
            warnings.warn(f"fastrnn has no kernels for {data.device.type} tensors yet; "
                          f"{type(self).__name__} runs torch.nn's implementation there",
                          stacklevel=2)
            return super().forward(input, hx)
        if runs_torch_nn():  # torch.func.grad, jvp, ...; a TorchScript trace
            return super().forward(input, hx)
        # torch.nn's _update_flat_weights() refreshes self._flat_weights when a parameter was
        # replaced; reading the parameters directly is the same list, at a fraction of the cost
        # (parametrized weights are computed once, not twice).
        weights = read_parameters(self, self._flat_weights_names)
        states = None if exporter else self._checked_dense_states(input, hx, weights)
        if states is not None:
            return self._dense(input, *states, weights, exporter)
        is_lstm = self.mode == "LSTM"
        is_packed = isinstance(input, PackedSequence)
        is_batched = True
        sorted_indices = unsorted_indices = batch_sizes = None
        if is_packed:
            input, batch_sizes, sorted_indices, unsorted_indices = input
        else:
            if input.dim() not in (2, 3):
                name = "RNN" if self.mode.startswith("RNN") else self.mode
                tensor = " tensor" if name == "RNN" else ""
                raise ValueError(
                    f"{name}: Expected input to be 2D or 3D, got {input.dim()}D{tensor} instead")
            is_batched = input.dim() == 3
            if not is_batched:
                input = input.unsqueeze(0 if self.batch_first else 1)
            if hx is not None:
                hx = self._batched_hx(hx, is_batched)
        if is_lstm and is_packed and isinstance(hx, torch.Tensor):  # as torch.nn's lstm op
            raise TypeError("LSTM: hx must be a tuple (h_0, c_0), got a Tensor")
        if hx is None:  # already in sorted order
            hx = self._zero_hx(input, batch_sizes, sorted_indices)
            self._check_forward_args(input, hx, batch_sizes)
        else:
            self._check_forward_args(input, hx, batch_sizes)
            hx = self.permute_hidden(hx, sorted_indices)
        if is_lstm and len(hx) != 2:
            raise RuntimeError("lstm expects two hidden states")
        h0, c0 = hx if is_lstm else (hx, None)
        check_devices_and_dtypes(input, h0, c0, weights[0])

        if not is_packed:
            output, hidden = self._dense(input, h0, c0, weights, exporter)
            if is_batched:
                return output, hidden
            h_n, c_n = hidden if is_lstm else (hidden, None)
            output = output.squeeze(0 if self.batch_first else 1)
            return output, (h_n.squeeze(1), c_n.squeeze(1)) if is_lstm else h_n.squeeze(1)
        if exporter:
            raise RuntimeError(
                f"fastrnn.{type(self).__name__}: PackedSequence input does not export with "
                "torch.onnx.export(dynamo=True), nor does torch.nn's; export with "
                "dynamo=False, which maps it to ONNX's sequence_lens, or pass padded input")
        output, h_n, c_n = self._recurrence(input, batch_sizes, h0, c0, weights, True)
        hidden = (h_n, c_n) if is_lstm else h_n
        output = PackedSequence(output, batch_sizes, sorted_indices, unsorted_indices)
        return output, self.permute_hidden(hidden, unsorted_indices)

    def __prepare_scriptable__(self):
        """What torch.jit.script compiles in this module's place: torch_nn_twin(self)."""
        return torch_nn_twin(self)

    def _checked_dense_states(self, input, hx, weights):
        """(h0, c0) for the common call, whose arguments pass torch.nn's checks by a few
        comparisons: a batched dense input of at least one step, on the weights' device and
        in their (supported) dtype, with hx None or of the expected shapes, dtype and device,
        in eager mode; c0 is None but for an LSTM. Else None: the general path then checks
        (and raises) as torch.nn does. On a small step, the general checks cost as much as
        the arithmetic."""
        if (type(input) is not torch.Tensor or input.dim() != 3
                or torch.compiler.is_compiling() or input.dtype != weights[0].dtype
                or input.dtype not in _SUPPORTED_DTYPES or input.device != weights[0].device
                or input.size(2) != self.input_size
                or input.size(1 if self.batch_first else 0) == 0):
            return None
        batch = input.size(0 if self.batch_first else 1)
        layers = self.num_layers * (2 if self.bidirectional else 1)
        h_size = (layers, batch, self.proj_size or self.hidden_size)
        c_size = (layers, batch, self.hidden_size)
        is_lstm = self.mode == "LSTM"
        if hx is None:
            zeros = lambda size: torch.zeros(size, dtype=input.dtype, device=input.device)
            return zeros(h_size), zeros(c_size) if is_lstm else None
        if is_lstm and (type(hx) is not tuple or len(hx) != 2):
            return None
        states = hx if is_lstm else (hx,)
        for state, size in zip(states, (h_size, c_size)):
            if (type(state) is not torch.Tensor or state.shape != size
                    or state.dtype != input.dtype or state.device != input.device):
                return None
        return states if is_lstm else (hx, None)

    def _dense(self, input, h0, c0, weights, exporter):
        """The stack on a batched dense input [T, B, I] ([B, T, I] batch_first), checked ->
        (output as torch.nn returns it, h_n, or (h_n, c_n) for an LSTM)."""
        if self.batch_first:
            input = input.transpose(0, 1)
        steps, batch = input.shape[:2]
        if steps == 0:
            raise RuntimeError("Expected sequence length to be larger than 0 in RNN")
        if exporter:
            output, h_n, c_n = _onnx.rnn(self, input, h0, c0, weights)
        else:
            # One step as it is: functional.rnn gives it to the cell op in its [1, B, I] shape.
            data = input if steps == 1 else input.reshape(steps * batch, input.shape[2])
            output, h_n, c_n = self._recurrence(data, dense_batch_sizes(steps, batch), h0, c0,
                                                weights, False)
        output = output.view(steps, batch, output.shape[-1]) if output.dim() == 2 else output
        if self.batch_first:
            output = output.transpose(0, 1)
        return output, (h_n, c_n) if self.mode == "LSTM" else h_n

    def _recurrence(self, data, batch_sizes, h0, c0, weights, is_packed):
        """The stack on packed rows (shapes: functional.rnn)."""
        return functional.rnn(
            self.mode, data, batch_sizes, h0, c0, weights, has_bias=self.bias,
            num_layers=self.num_layers, bidirectional=self.bidirectional,
            proj_size=getattr(self, "proj_size", 0), dropout=float(self.dropout),
            training=self.training, packed=is_packed)

    def _batched_hx(self, hx, is_batched):
        """Checks hx's rank against the input's (as torch.nn does) and adds the batch dim."""
        rank = 3 if is_batched else 2
        kind = "batched 3-D" if is_batched else "unbatched 2-D"
        if self.mode == "LSTM":
            if hx[0].dim() != rank or hx[1].dim() != rank:
                raise RuntimeError(
                    f"For {kind} input, hx and cx should also be {rank}-D but got "
                    f"({hx[0].dim()}-D, {hx[1].dim()}-D) tensors")
            return hx if is_batched else (hx[0].unsqueeze(1), hx[1].unsqueeze(1))
        if hx.dim() != rank:
            raise RuntimeError(
                f"For {kind} input, hx should also be {rank}-D but got {hx.dim()}-D tensor")
        return hx if is_batched else hx.unsqueeze(1)

    def _check_forward_args(self, input, hx, batch_sizes):
        """torch.nn's checks of input and hx. The batch of a packed input is batch_sizes[0], a
        value torch.compile cannot trace: compiled, hx's batch is compared with it by the ops
        when they run, and every other dimension here."""
        if batch_sizes is None or not torch.compiler.is_compiling():
            self.check_forward_args(input, hx, batch_sizes)
            return
        self.check_input(input, batch_sizes)
        layers = self.num_layers * (2 if self.bidirectional else 1)
        h0, c0 = hx if self.mode == "LSTM" else (hx, None)
        p = getattr(self, "proj_size", 0) or self.hidden_size
        if c0 is None:
            self.check_hidden_size(h0, (layers, h0.size(1), p))
            return
        self.check_hidden_size(h0, (layers, h0.size(1), p), "Expected hidden[0] size {}, got {}")
        self.check_hidden_size(c0, (layers, c0.size(1), self.hidden_size),
                               "Expected hidden[1] size {}, got {}")

    def _zero_hx(self, input, batch_sizes, sorted_indices):
        """Zero initial state(s) shaped as torch.nn expects them."""
        layers = self.num_layers * (2 if self.bidirectional else 1)
        if batch_sizes is None:
            batch = input.size(0) if self.batch_first else input.size(1)
        elif not torch.compiler.is_compiling():
            batch = batch_sizes[0]  # a 0-d tensor, as torch.nn passes it
        elif sorted_indices is not None:  # compiled, batch_sizes[0] is data, not a shape;
            batch = sorted_indices.size(0)  # there is one index per sequence
        else:
            batch = None  # packed_zeros: a data-dependent batch

        def zeros(size):
            if batch is None:
                return packed_zeros(batch_sizes, layers, size, input.dtype, input.device)
            return torch.zeros(layers, batch, size, dtype=input.dtype, device=input.device)

        if self.mode == "LSTM":
            return zeros(self.proj_size or self.hidden_size), zeros(self.hidden_size)
        return zeros(self.hidden_size)


def torch_nn_twin(module):
    """module as an instance of the torch.nn class it subclasses (nn.LSTM, nn.GRUCell, ...),
    sharing its parameters, buffers and hooks: what TorchScript compiles in its place
    (__prepare_scriptable__), since it cannot compile fastrnn's forward. A scripted model
    (and a traced one: the forwards call torch.nn's in a trace) then holds torch.nn's
    graph, which runs wherever libtorch does."""
    cls = next(c for c in type(module).__mro__ if c.__module__.startswith("torch.nn"))
    twin = cls.__new__(cls)
    twin.__dict__.update(module.__dict__)
    return twin


def check_devices_and_dtypes(input, h0, c0, weight):
    """torch.nn's checks of the input's and states' devices and dtypes against each other and
    the parameters', and fastrnn's of the dtype. input: the rows [N, I] or the input."""
    if input.device != weight.device:
        raise RuntimeError(
            "Input and parameter tensors are not at the same device, found input tensor "
            f"at {input.device} and parameter tensor at {weight.device}")
    for state in (h0, c0):
        if state is None:
            continue
        if state.device != input.device:
            raise RuntimeError(
                "Input and hidden tensors are not at the same device, found input tensor "
                f"at {input.device} and hidden tensor at {state.device}")
        if state.dtype != input.dtype and not functional.autocast_enabled(input.device):
            raise RuntimeError(
                f"Input and hidden tensors must have the same dtype, found input "
                f"{input.dtype} and hidden {state.dtype}")
    if not (input.is_floating_point() and input.dtype in _SUPPORTED_DTYPES):
        raise RuntimeError(
            f"fastrnn supports float32, float64, bfloat16 and float16, got input of dtype "
            f"{input.dtype}")


_last_dense_batch_sizes = ((0, 0), None)  # ((steps, batch), tensor)


def dense_batch_sizes(steps, batch):
    """batch_sizes of a dense input: [batch] * steps (int64, CPU). The ops only read it, so
    the last one is reused in eager mode (a new tensor costs about as much as a small step's
    arithmetic); it is made outside inference mode, so that a later call with autograd can
    save it, and kept only if it is a plain tensor (not one a dispatch mode such as
    FakeTensorMode made)."""
    global _last_dense_batch_sizes
    if torch.compiler.is_compiling():
        return torch.full((steps,), batch, dtype=torch.long, device="cpu")
    key, sizes = _last_dense_batch_sizes
    if key != (steps, batch):
        with torch.inference_mode(False):
            sizes = torch.full((steps,), batch, dtype=torch.long, device="cpu")
        if type(sizes) is torch.Tensor:
            _last_dense_batch_sizes = ((steps, batch), sizes)
    return sizes


def read_parameters(module, names):
    """module's parameters `names`, read from module._parameters (nn.Module.__getattr__ costs
    a Python call each, which shows on a single step); a parametrized one, which
    _parameters lacks, through its attribute."""
    params = module._parameters
    return [params[name] if name in params else getattr(module, name) for name in names]


# Whether the extension was built with its CUDA kernels: read once, so that torch.compile
# sees a constant here rather than a call it cannot trace.
_CUDA_KERNELS = torch._C._dispatch_has_kernel_for_dispatch_key("fastrnn::lstm_forward", "CUDA")


def _has_kernels(tensor):
    """Whether fastrnn's recurrence ops run on tensor's device (meta: shapes only)."""
    return tensor.is_cpu or tensor.is_meta or (tensor.is_cuda and _CUDA_KERNELS)


_SUPPORTED_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


class _OwnRecurrence(_FusedRecurrence):
    """forward() for a one-layer, one-direction torch.nn.RNN subclass whose recurrence is not
    torch.nn's (the clockwork RNN, a reservoir): torch.nn's input handling, then
    _own_recurrence(data [N, I], batch_sizes, h0 [B, H], weights) -> (y [N, H], h_n [B, H]),
    under autocast in the parameters' dtype. Nothing to fall back on: no ONNX translation,
    and a device without fastrnn's kernels is refused."""

    def forward(self, input, hx=None):
        data = input.data if isinstance(input, PackedSequence) else input
        name = type(self).__name__
        if _onnx.active_exporter():
            raise RuntimeError(f"fastrnn.{name} has no ONNX translation")
        if torch.jit.is_tracing():
            refuse_torchscript(name)
        if not _has_kernels(data):
            raise RuntimeError(f"fastrnn.{name} has no kernels for {data.device.type} tensors")
        refuse_differentiating_transform(name)
        return super().forward(input, hx)

    def __prepare_scriptable__(self):
        refuse_torchscript(type(self).__name__)

    def _recurrence(self, data, batch_sizes, h0, c0, weights, is_packed):
        if data.dim() == 3:  # a dense step, as _dense passes it: [1, B, I]
            data = data.reshape(-1, data.shape[-1])
        if functional.autocast_enabled(data.device):
            dtype = weights[0].dtype
            with torch.autocast(data.device.type, enabled=False):
                y, h_n = self._own_recurrence(data.to(dtype), batch_sizes, h0[0].to(dtype),
                                              weights)
        else:
            y, h_n = self._own_recurrence(data, batch_sizes, h0[0], weights)
        return y, h_n.unsqueeze(0), None


class LSTM(_FusedRecurrence, nn.LSTM):
    __doc__ = "Drop-in replacement for torch.nn.LSTM (same arguments, parameters, I/O).\n\n" + (
        nn.LSTM.__doc__ or "")


class GRU(_FusedRecurrence, nn.GRU):
    __doc__ = "Drop-in replacement for torch.nn.GRU (same arguments, parameters, I/O).\n\n" + (
        nn.GRU.__doc__ or "")


class RNN(_FusedRecurrence, nn.RNN):
    __doc__ = "Drop-in replacement for torch.nn.RNN (same arguments, parameters, I/O).\n\n" + (
        nn.RNN.__doc__ or "")


# torch.load(weights_only=True), the default since torch 2.6, rebuilds only allowlisted classes.
# A model saved whole with torch.save(model) refers to these classes by name where one built
# with torch.nn refers to torch.nn's; they add no state of their own (the pickle holds the
# class and torch.nn's state), so they load as safely as their twins, and allowlisting them here
# lets such a model load wherever its torch.nn twin would.
torch.serialization.add_safe_globals([LSTM, GRU, RNN])
