"""What the tests share, split like the library it tests:

- cases:             the configurations (cells, input kinds, sizes) and their readable ids
- modules:           a torch.nn module and a fastrnn module with the same weights
- inputs:            inputs in every layout (dense, packed, unbatched), hx included
- running:           forward and backward through a loss that reaches every gradient path
- compare:           comparisons with the bounds of `tolerances`
- tolerances:        the one tolerance table (every numerical bound of the tests)
- devices:           the device parameters and the `gpu` marker
- parity:            fastrnn against torch.nn, same dtype; bf16/fp16 against float64
- cells:             the cells (LSTMCell, GRUCell, RNNCell): configurations, a torch.nn and a
                     fastrnn cell with the same weights, inputs, a call or a loop of calls
                     with backward, parity in the same dtype and bf16/fp16 against float64
- ops:               arguments for the raw ops (torch.ops.fastrnn.*), the cells' included
- reference:         the plain-PyTorch recurrence, the test oracle (uses no fastrnn code)
- reference_module:  the reference recurrence applied to a module's inputs
- paths:             the checkout's paths, scripts loaded by path, child-process environments
- client_model:      a client's model module (for the weights-only loading tests): a model
                     around a layer, one around a cell
- isolated:          groups of cases run in a child process (a crash fails, not ends, the run)
- bench:             fastrnn.bench's tests: a tiny real run, made-up results documents
- persistent_host:   the persistent kernels' host emulation (tests/native) through ctypes,
                     their schedule and the C entry points' cell and dtype numbers
- persistent_cases:  persistent-kernel problems and fastrnn's CPU ops as their oracle

Test modules import these (tests/ is on the path through the pytest configuration in
pyproject.toml); fixtures and hooks stay in conftest.py.
"""
