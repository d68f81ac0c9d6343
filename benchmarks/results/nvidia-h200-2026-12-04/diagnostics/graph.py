import sys, traceback, torch, fastrnn
mode, backward = sys.argv[1], sys.argv[2] == "1"
torch.manual_seed(0)
m = fastrnn.LSTM(8, 32, 2, bidirectional=True, proj_size=16).cuda()
x = torch.randn(6, 4, 8, device="cuda", requires_grad=True)
def step():
    out = m(x)[0]
    if backward:
        return torch.autograd.grad(out.sum(), [x, *m.parameters()])
    return out
s = torch.cuda.Stream(); s.wait_stream(torch.cuda.current_stream())
with torch.cuda.stream(s):
    for _ in range(3): step()
torch.cuda.current_stream().wait_stream(s)
g = torch.cuda.CUDAGraph()
try:
    with torch.cuda.graph(g, capture_error_mode=mode):
        step()
    g.replay(); torch.cuda.synchronize(); print("graph", mode, backward, "OK")
except Exception as e:
    print("graph", mode, backward, "FAILED", str(e).splitlines()[0]); traceback.print_exc()
