export FASTRNN_COMMIT=$(cat .gpu/commit) PYTHONUNBUFFERED=1
G=/tmp/gc; mkdir -p $G
python3 scripts/gpu_check.py $G --budget 100 --only environment build > $G/main.log 2>&1
cat $G/summary.txt
for a in "yes float32" "1 float64"; do timeout 30 python3 .gpu/throw.py $a > $G/throw-${a// /-}.log 2>&1; echo "throw $a rc=$?"; grep -E "error|surviv|Fatal" $G/throw-${a// /-}.log; done
timeout 100 cuda-gdb -q -batch -ex run -ex bt -ex "info sharedlibrary" --args python3 .gpu/repro.py 1 64 256 > $G/gdb.log 2>&1; echo gdb rc=$?; grep -E "^#[0-9]+ " $G/gdb.log | head -30
B="python3 -X faulthandler -m fastrnn.bench --device cuda --min-time 0.03 --repeats 5 --warmup 1"
timeout 30 $B --cell LSTM --dtype bfloat16 float16 --T 1024 --B 16 --H 768 --out $G/bench-goal > $G/bench-goal.log 2>&1; echo goal rc=$?; grep -E "^LSTM" $G/bench-goal.log
timeout 100 $B --grid gpu --variants --out $G/bench-gpu > $G/bench-gpu.log 2>&1; echo gpu rc=$?
timeout 40 $B --cell LSTM GRU RNN_TANH RNN_RELU --dtype bfloat16 --T 100 --B 1 8 16 --H 256 512 1024 --variants persistent --out $G/bench-pers-bf16 > $G/bench-pers-bf16.log 2>&1; echo pers-bf16 rc=$?
timeout 30 $B --cell LSTM GRU RNN_TANH RNN_RELU --dtype float32 --T 100 --B 1 8 16 --H 256 512 --variants persistent --out $G/bench-pers-f32 > $G/bench-pers-f32.log 2>&1; echo pers-f32 rc=$?
timeout 20 $B --cell LSTM GRU RNN_TANH RNN_RELU --dtype bfloat16 float16 --T 100 --B 64 --H 256 --variants persistent --out $G/bench-pers-b64 > $G/bench-pers-b64.log 2>&1; echo pers-b64 rc=$?
timeout 60 $B --grid anchors --variants --out $G/bench-anchors > $G/bench-anchors.log 2>&1; echo anchors rc=$?
