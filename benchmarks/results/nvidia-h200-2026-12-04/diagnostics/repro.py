import os, sys, faulthandler, torch, fastrnn
faulthandler.enable()
B, H = int(sys.argv[2]), int(sys.argv[3])
torch.manual_seed(0)
m = fastrnn.LSTM(H, H).cuda()
x = torch.randn(100, B, H, device="cuda", requires_grad=True)
for i, setting in enumerate(sys.argv[1].split(",")):
    os.environ["FASTRNN_PERSISTENT"] = setting
    print(i, setting, "fwd", flush=True)
    out = m(x)[0]
    print(i, setting, "bwd", flush=True)
    try:
        g = torch.autograd.grad(out, [x, *m.parameters()], torch.randn_like(out))
    except RuntimeError as e:
        print("error:", str(e).splitlines()[0][:200], flush=True)
    torch.cuda.synchronize()
    print(i, setting, "ok", flush=True)
print("done", flush=True)
