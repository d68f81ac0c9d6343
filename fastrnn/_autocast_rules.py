"""What torch.nn's recurrent layers and cells do under autocast, as rules the layers follow
(functional._rnn_under_autocast) and the cells (cells._step_under_autocast): the dtype the
layers compute in, that of their input products, the dtypes of the results, and which of
torch.nn's kernels (cuDNN, oneDNN) a call would take, whose autocast wrappers decide them."""

import torch


def autocast_product_dtype(device_type, autocast_dtype, weight_dtype):
    """The dtype of the layers' input products under autocast (x @ W_ih^T over all rows, and
    in backward the input's and W_ih's gradients from it, with float accumulation), or None
    for the compute dtype: on the CPU under bfloat16 autocast, bfloat16 where oneDNN
    computes in it on this CPU (onednn_supports) and the weights are float32, as torch.nn's
    products are under autocast. In training the recurrence itself stays in float
    (autocast_compute_dtype) but for the recurrent products (functional._recurrent_weight).
    Measured in training on an AMD EPYC with AVX-512 bf16 (T=100, B=64, I=H=512, 2 threads,
    fwd+bwd, interleaved, against float32 products): see the README's client
    configurations."""
    if (device_type == "cpu" and weight_dtype == torch.float32
            and autocast_dtype == torch.bfloat16 and onednn_supports(autocast_dtype)):
        return autocast_dtype
    return None


def autocast_compute_dtype(device_type, autocast_dtype, weight_dtype, needs_grad):
    """The dtype the layers compute in under autocast. Inference on the CPU under bfloat16
    autocast: autocast_product_dtype's bfloat16 where it has one (products with float
    accumulation, the gates and the LSTM cell state in float inside the kernels); float16
    is not yet measured.
    Measured on an AMD EPYC with AVX-512 bf16 (T=100, B=64, I=H=512, 2 threads, against
    float32): LSTM 99 against 176 ms (torch.nn 75), GRU 57 against 119 (torch.nn 88), RNN 21
    against 42 (torch.nn 27), the outputs' error against float64 within 1.05x of torch.nn's.
    Otherwise the weights' dtype (float accuracy, no emulated 16-bit products): in training
    the kernels would carry h and its gradient in the 16-bit type from step to step, where
    torch.nn carries them in float, and the gradients were up to 3x further from float64
    than torch.nn's (tests/test_autocast.py requires at most 2x). CUDA: the weights' dtype
    (its 16-bit paths under autocast are not yet measured)."""
    product = autocast_product_dtype(device_type, autocast_dtype, weight_dtype)
    return product if product is not None and not needs_grad else weight_dtype


def autocast_result_dtypes(mode, device_type, autocast_dtype, weight_dtype, h0_dtype, c0_dtype,
                           has_proj, kernel=None):
    """(dtype of output and h_n, dtype of c_n) that torch.nn's layer returns under autocast.

    kernel: "cudnn" where torch.nn takes cuDNN (torch_nn_takes_cudnn): cuDNN's autocast
    wrapper (_cudnn_rnn_cast_reflatten, aten/src/ATen/cudnn/AutocastRNN.cpp) casts every
    argument to float16 whatever the autocast dtype, so every result is float16.
    "onednn" where torch.nn's LSTM takes oneDNN on the CPU (torch_nn_takes_onednn): autocast
    casts every argument of each oneDNN layer (mkldnn_rnn_layer), so autocast_dtype.
    CUDA without cuDNN: autocast_dtype (not yet compared with torch.nn on a GPU).
    Elsewhere on the CPU torch.nn runs each step's products (x @ W_ih^T, h @ W_hh^T, the LSTM
    projection) in autocast_dtype and the state updates in ordinary type promotion, so
      RNN: the activation of a product: autocast_dtype;
      GRU: (h - n) * z + n with h the state: promote(h0, autocast_dtype);
      LSTM: c' = f * c + i * g: promote(c0, autocast_dtype) for c_n, and for output/h_n
            unless a projection (a product) makes them autocast_dtype.
    float64 weights are never cast by autocast: the results stay float64.
    """
    if weight_dtype == torch.float64:
        return torch.float64, torch.float64
    if kernel == "cudnn":
        return torch.float16, torch.float16
    if device_type != "cpu" or kernel == "onednn":
        return autocast_dtype, autocast_dtype
    if mode.startswith("RNN"):
        return autocast_dtype, None
    if mode == "GRU":
        return torch.promote_types(h0_dtype, autocast_dtype), None
    c_dtype = torch.promote_types(c0_dtype, autocast_dtype)
    return (autocast_dtype if has_proj else c_dtype), c_dtype


# What this build of torch and this machine support: read once, at import, so that
# torch.compile sees constants where the rules below consult them.
_CUDNN_BUILT = torch.backends.cudnn.is_available()
_ONEDNN_BUILT = torch.backends.mkldnn.is_available()
_ONEDNN_DTYPES = frozenset(
    dtype for dtype, supported in (
        (torch.bfloat16, _ONEDNN_BUILT and torch.ops.mkldnn._is_mkldnn_bf16_supported()),
        (torch.float16, _ONEDNN_BUILT and torch.ops.mkldnn._is_mkldnn_fp16_supported()))
    if supported)


def torch_nn_takes_cudnn(data):
    """Whether torch.nn's layer runs cuDNN for this input: at::native::cudnn_is_acceptable
    (torch 2.13: cuDNN built and enabled, a CUDA tensor, not empty; no dtype condition)."""
    return (data.device.type == "cuda" and data.numel() > 0 and _CUDNN_BUILT
            and torch.backends.cudnn.enabled)


def torch_nn_takes_onednn(mode, data, packed, has_proj):
    """Whether torch.nn's layer runs oneDNN's LSTM for this input (data: the input's rows in
    the dtype the caller passed). Mirrors use_mkldnn() in aten/src/ATen/native/RNN.cpp and the
    checks at::lstm makes around it (torch 2.13): dense LSTM input without projection, on the
    CPU, oneDNN built and enabled, not empty, and float32, or bfloat16 where oneDNN supports
    it on this CPU, or float16 where it does and autograd is off. The dtype is the one given:
    on the CPU autocast has no rule for aten::lstm itself, only for the oneDNN layer it calls.
    GRU, RNN and packed input never take oneDNN. Not mirrored: at::lstm also keeps off oneDNN
    when hx has symbolic sizes (torch.compile with dynamic shapes)."""
    if mode != "LSTM" or packed or has_proj or data.device.type != "cpu" or data.numel() == 0:
        return False
    if not (_ONEDNN_BUILT and torch.backends.mkldnn.enabled):
        return False
    if data.dtype == torch.float32:
        return True
    if data.dtype == torch.bfloat16:
        return onednn_supports(torch.bfloat16)
    return data.dtype == torch.float16 and not torch.is_grad_enabled() and (
        onednn_supports(torch.float16))


def onednn_supports(dtype):
    """Whether oneDNN computes in dtype on this CPU: ATen's mkldnn_bf16_device_check() and
    mkldnn_fp16_device_check() (aten/src/ATen/native/mkldnn/Utils.h), which use_mkldnn reads."""
    return dtype in _ONEDNN_DTYPES
