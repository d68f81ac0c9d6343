"""Which operation of an LSTM-with-projection backward breaks CUDA-graph capture (global mode).
python3 graph_diag.py LAYERS BIDIR PROJ LOG"""
import contextlib, sys
import torch
import fastrnn
from torch.utils._python_dispatch import TorchDispatchMode

class Log(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        print("  op", func, [tuple(a.shape) if isinstance(a, torch.Tensor) else type(a).__name__ for a in args][:6], flush=True)
        return func(*args, **(kwargs or {}))

layers, bidir, proj, log = (int(a) for a in sys.argv[1:5])
torch.manual_seed(0)
m = fastrnn.LSTM(8, 16, layers, bidirectional=bool(bidir), proj_size=proj).cuda()
x = torch.randn(6, 4, 8, device="cuda", requires_grad=True)
def fb():
    out, (h, c) = m(x)
    return torch.autograd.grad(out.sum() + h.sum() + c.sum(), [x] + list(m.parameters()))
s = torch.cuda.Stream(); s.wait_stream(torch.cuda.current_stream())
with torch.cuda.stream(s):
    for _ in range(3): fb()
torch.cuda.current_stream().wait_stream(s)
g = torch.cuda.CUDAGraph()
name = f"layers={layers} bidir={bidir} proj={proj}"
try:
    with torch.cuda.graph(g):
        with (Log() if log else contextlib.nullcontext()):
            print("forward", flush=True)
            out, (h, c) = m(x)
            print("backward", flush=True)
            torch.autograd.grad(out.sum() + h.sum() + c.sum(), [x] + list(m.parameters()))
    print(name, "CAPTURED", flush=True)
except Exception as e:
    print(name, "FAILED", str(e).splitlines()[0], flush=True)
