"""What the input product's tests share (test_linear_op.py, test_input_product.py): the
depth from which fastrnn::linear takes oneDNN, the bias parametrisation, and how a product
is compared."""

import pytest
import torch

from fastrnn._input_product import LINEAR_MIN_DEPTH
from helpers.tolerances import LOW_PRECISION, atol_rtol, tolerance

BIAS = [pytest.param(True, id="bias"), pytest.param(False, id="nobias")]
OTHER_LIBRARY = atol_rtol(torch.float32, "other_product_library")

# A depth at or past the one from which the op takes oneDNN (csrc/cpu/linear.cpp: 256 where
# it does; below it, fastrnn's panel kernel).
DEPTH = max(LINEAR_MIN_DEPTH, 256)


def assert_product_close(got, want):
    """got (a product in its dtype) within "product_vs_float64" of want (float64)."""
    bound = tolerance(got.dtype, "product_vs_float64") * want.abs().max().item()
    torch.testing.assert_close(got.double(), want, atol=bound, rtol=0)


def assert_low_precision_close(got, torch_result, want):
    """got (a 16-bit product) no further from want (float64) than LOW_PRECISION's factor
    times torch_result's error (torch's own product in that dtype), plus its slack times
    want's largest magnitude."""
    error = (got.double() - want).abs().max().item()
    torch_error = (torch_result.double() - want).abs().max().item()
    slack = LOW_PRECISION["slack"] * want.abs().max().item()
    assert error <= LOW_PRECISION["factor"] * torch_error + slack
