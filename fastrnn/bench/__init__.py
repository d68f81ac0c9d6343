"""fastrnn.bench: the benchmark of fastrnn against torch.nn (`python -m fastrnn.bench`).

Modules: grids (cases and named grids), timing (interleaved median timing), cases (one
case: same weights, parity, flops, timing), states (the cases that carry states: a cell
call, a loop through a cell, a layer called with hx), machine (device, versions, GEMM
peak), suite (runs cases into a results document), report (terminal table,
JSON/CSV/markdown), plot (speedup PNG), compare (regressions between two results files),
__main__ (command line).
"""
