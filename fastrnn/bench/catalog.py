"""The named grids of the benchmark (python -m fastrnn.bench --grid NAME): quick, core,
anchors, gpu, full, step, clients, structured and variants. Cases, blocks and kinds:
grids.py."""

from .grids import CELLS, PACKED_MIN_LENGTH, VARIANT_CELLS, Block, Grid, Shape


def _square(T, batches, hiddens, **kw):
    """Shapes with I = H for every (B, H) pair, at sequence length T."""
    return tuple(Shape(T, b, h, h, **kw) for h in hiddens for b in batches)


# The step grid: single steps of every cell, B x H = I.
STEP_BATCHES = (1, 8, 32, 128)
STEP_HIDDENS = (64, 256, 1024)
STEP_LOOP_T = 100

CORE_SHAPES = tuple(Shape(*s) for s in [(100, 64, 512, 512), (100, 32, 128, 128),
                                         (50, 8, 64, 64), (200, 1, 256, 256),
                                         (25, 256, 256, 256)])

# The clients grid: the configurations users run (see its description).
CLIENT_CELLS = ("LSTM", "GRU", "RNN_TANH")
WORD_LM = Shape(35, 20, 200, 200, layers=2)  # PyTorch's examples/word_language_model
SEQUENCE_MODEL = Shape(200, 32, 100, 256)
PACKED_CLASSIFIER = Shape(200, 32, 100, 256, layers=2, bidirectional=True)
AUTOCAST_SHAPE = Shape(100, 64, 512, 512)
VARIANT_SHAPE = Shape(100, 32, 256, 256)  # the variants' goal shape

GRIDS = {
    "quick": Grid("quick", "small LSTM/GRU/RNN float32 shapes, fwd and fwdbwd (minutes on a "
                  "2-core CPU)", (
        Block(("LSTM", "GRU", "RNN_TANH"), ("float32",), _square(50, (1, 16, 64), (64, 256))),
    )),
    "core": Grid("core", "the CPU speed grid of the README: LSTM/GRU/RNN(tanh), float32, "
                 "fwdbwd, 2 threads", (
        Block(("LSTM", "GRU", "RNN_TANH"), ("float32",), CORE_SHAPES, modes=("fwdbwd",)),
    ), threads=2),
    "anchors": Grid("anchors", "shapes others publish (PyTorch fastrnns, half-precision LSTM, "
                    "haste sweep, batch-1 inference)", (
        Block(("LSTM",), ("float32",), (Shape(100, 64, 512, 512),),
              note="PyTorch fastrnns default"),
        Block(("LSTM",), ("bfloat16", "float16"), (Shape(1024, 16, 768, 768),),
              cpu_dtypes=("float32",), note="half-precision LSTM anchor"),
        Block(("LSTM",), ("float32",), _square(50, (1, 16, 32, 64, 128),
                                               (128, 256, 512, 1024, 2048)),
              note="haste sweep"),
        Block(("LSTM", "GRU"), ("float32",),
              _square(100, (1,), (256, 512, 1024), inference_only=True),
              modes=("fwd",), note="batch-1 inference"),
    )),
    "gpu": Grid("gpu", "every cell, float32/bfloat16/float16, T=100, B in {1, 8, 16, 64}, "
                "H = I in {256, 512, 1024}, fwd and fwdbwd (for GPUs)", (
        Block(CELLS, ("float32", "bfloat16", "float16"),
              _square(100, (1, 8, 16, 64), (256, 512, 1024)), cpu_dtypes=("float32",)),
    )),
    "full": Grid("full", "all cells, T in {50, 200}, B in {1, 8, 32, 128}, H = I in "
                 "{64 .. 1024}, plus 2-layer and bidirectional; half precision on GPU", (
        Block(CELLS, ("float32", "bfloat16", "float16"),
              _square(50, (1, 8, 32, 128), (64, 128, 256, 512, 1024))
              + _square(200, (1, 8, 32, 128), (64, 128, 256, 512, 1024)),
              cpu_dtypes=("float32",)),
        Block(("LSTM", "GRU"), ("float32",),
              (Shape(100, 32, 256, 256, layers=2), Shape(100, 32, 256, 256, bidirectional=True),
               Shape(100, 32, 256, 256, layers=2, bidirectional=True))),
    )),
    # Per-call times of microseconds: each timed sample repeats the call for 2 ms at least.
    "step": Grid("step", "single steps with the states given, every cell, float32, 2 threads: "
                 "one cell call (fastrnn.LSTMCell/GRUCell/RNNCell) and one T=1 layer call, "
                 "B in {1, 8, 32, 128}, H = I in {64, 256, 1024}, fwd and fwdbwd; and "
                 f"{STEP_LOOP_T}-step training loops through a cell (fwdbwd; B=1 H=64, B=32 "
                 "H=256, and B=128 H=1024 with 3 timed rounds, not for RNN_RELU)", (
        Block(CELLS, ("float32",), _square(1, STEP_BATCHES, STEP_HIDDENS), kind="cell",
              hx=True, note="one cell call"),
        Block(CELLS, ("float32",), _square(1, STEP_BATCHES, STEP_HIDDENS), hx=True,
              note="one T=1 layer call"),
        Block(CELLS, ("float32",), (Shape(STEP_LOOP_T, 1, 64, 64),
                                    Shape(STEP_LOOP_T, 32, 256, 256)),
              modes=("fwdbwd",), kind="cell_loop", hx=True,
              note=f"{STEP_LOOP_T}-step training loop"),
        # Seconds per loop: 3 timed rounds. Not RNN_RELU: at this size a few of its 13M
        # pre-activations lie within rounding of 0, where either library's float32 sums may
        # flip the ReLU's derivative, and the input gradients of those rows then differ by
        # more than the parity tolerance (as much from float64 as from each other).
        Block(("LSTM", "GRU", "RNN_TANH"), ("float32",), (Shape(STEP_LOOP_T, 128, 1024, 1024),),
              modes=("fwdbwd",), kind="cell_loop", hx=True, max_rounds=3,
              note=f"{STEP_LOOP_T}-step training loop (3 rounds)"),
    ), threads=2, min_sample=0.002),
    "clients": Grid("clients", "the configurations users run, LSTM/GRU/RNN(tanh), float32, 2 "
                    "threads: PyTorch's word_language_model (T=35 B=20 I=H=200, 2 layers; "
                    "training with dropout 0.2, and inference); a sequence model (T=200 B=32 "
                    "I=100 H=256; inference, training with the loss on the output, and on "
                    "h_n only); a packed bidirectional classifier (2 layers, I=100 H=256, 32 "
                    f"sequences of {PACKED_MIN_LENGTH}..200 steps; inference, and training "
                    "with the loss on h_n); and T=100 B=64 I=H=512 under bfloat16 autocast "
                    "(inference and training)", (
        Block(CLIENT_CELLS, ("float32",), (WORD_LM,), dropout=0.2,
              note="word_language_model (dropout 0.2 in training)"),
        Block(CLIENT_CELLS, ("float32",), (SEQUENCE_MODEL,), note="sequence model"),
        Block(CLIENT_CELLS, ("float32",), (SEQUENCE_MODEL,), modes=("fwdbwd",), loss="final",
              note="sequence classifier, loss on h_n"),
        Block(CLIENT_CELLS, ("float32",), (PACKED_CLASSIFIER,), packed=True, loss="final",
              note="packed bidirectional classifier (training: loss on h_n)"),
        Block(CLIENT_CELLS, ("float32",), (AUTOCAST_SHAPE,), autocast="bfloat16",
              note="float32 modules under bfloat16 autocast"),
    ), threads=2),
    "structured": Grid("structured", "the structured recurrences against what users write "
                       "for them, float32, 2 threads: dilated stacks (3 layers, dilations 1, 2, "
                       "4; T=256 B=32 I=H=256; LSTM/GRU/RNN(tanh), fwd and fwdbwd) against a "
                       "loop over torch.nn's cells, and against torch.nn layers on the "
                       "interleaved subsequences; a clockwork RNN (periods 1, 2, 4, 8; T=256 "
                       "B=32 I=H=256) against a Python loop of it, and the full RNN of its "
                       "size", (
        Block(("LSTM", "GRU", "RNN_TANH"), ("float32",), (Shape(256, 32, 256, 256, layers=3),),
              kind="dilated", note="dilated stack vs a loop over torch.nn cells"),
        Block(("LSTM", "GRU", "RNN_TANH"), ("float32",), (Shape(256, 32, 256, 256, layers=3),),
              kind="dilated_interleaved",
              note="dilated stack vs torch.nn layers on interleaved subsequences"),
        Block(("RNN_TANH",), ("float32",), (Shape(256, 32, 256, 256),), kind="clockwork",
              note="clockwork RNN vs a Python loop of it"),
        Block(("RNN_TANH",), ("float32",), (Shape(256, 32, 256, 256),),
              note="the full RNN of the clockwork's size"),
    ), threads=2),
    "variants": Grid("variants", "the variants against what users write for them, float32, "
                     "2 threads, T=100 B=32 I=H=256: peepholes, coupled input-forget gates and "
                     "both (fastrnn.VariantLSTM), layer-normalised LSTM and GRU "
                     "(fastrnn.VariantLSTM, VariantGRU) against the same model as a plain "
                     "PyTorch loop over torch ops; and the plain LSTM and GRU of their size", (
        Block(VARIANT_CELLS, ("float32",), (VARIANT_SHAPE,), kind="variant",
              note="variant vs a PyTorch loop of it"),
        Block(("LSTM", "GRU"), ("float32",), (VARIANT_SHAPE,),
              note="the plain layer of its size"),
    ), threads=2),
}
