"""Fixtures shared by the test modules (the helpers they import live in tests/helpers/)."""

import pytest
import torch
import torch._dynamo


@pytest.fixture
def torch_state():
    """Seeded RNG, and a single intra-op thread for the test's duration (restored after).

    The tiny cases never reach fastrnn's parallel grain, and on a loaded 2-core machine
    idle OpenMP threads spinning in torch's own small GEMMs cost more than the work; tests
    that need the parallel paths ask for `multithreaded`. The fastrnn test files use this
    fixture through `pytestmark`, so other test files keep torch's defaults."""
    before = torch.get_num_threads()
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.set_num_threads(1)
    torch.manual_seed(1234)
    # float32 on CUDA means float32: no TF32 in cuBLAS (fastrnn's GEMMs) or cuDNN (torch.nn).
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.set_num_threads(before)
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32


@pytest.fixture
def multithreaded(torch_state):
    """Runs the test with 2 intra-op threads (parallel_for splits even on one core)."""
    torch.set_num_threads(2)
    yield


@pytest.fixture
def dynamo():
    """A fresh torch.compile state, with torch.nn's recurrent modules (and so fastrnn's,
    their subclasses) allowed in graphs; reset again after the test."""
    torch._dynamo.reset()
    with torch._dynamo.config.patch(allow_rnn=True):
        yield
    torch._dynamo.reset()


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """The directory of one tiny real run of fastrnn.bench (helpers/bench.py: TINY_RUN_ARGV),
    shared by the tests that read its files."""
    from helpers.bench import run_tiny  # imports fastrnn's extension: only when asked for
    return run_tiny(tmp_path_factory.mktemp("bench"))
