"""Device parameters and the `gpu` marker.

A test that needs a CUDA GPU carries the marks GPU_MARKS: the `gpu` marker (`pytest -m gpu`
selects these tests, `-m "not gpu"` leaves them out) and a skip, "needs a CUDA GPU", where
torch sees none. CUDA cases are collected everywhere, so a run without a GPU lists them
among its skips.
"""

import pytest
import torch

GPU_MARKS = [pytest.mark.gpu,
             pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
DEVICES = ["cpu", pytest.param("cuda", marks=GPU_MARKS)]
