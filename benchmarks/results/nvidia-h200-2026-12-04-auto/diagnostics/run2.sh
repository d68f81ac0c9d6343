# Second call: the auto rule and relu-in-float on the GPU, timings for the rule, the capture diagnosis.
export FASTRNN_COMMIT=$(cat .gpu/commit) PYTHONUNBUFFERED=1
G=/tmp/gc; mkdir -p $G
pack() { tar czf $OUT/gc.tgz -C /tmp gc; }
python3 scripts/gpu_check.py $G --budget 200 --only environment build kernel-library tests-ops tests-persistent tests-modules tests-cuda > $G/main.log 2>&1
cat $G/summary.txt; pack
for c in "1 0 8 1" "1 0 0 0" "1 1 8 0" "2 0 8 0" "2 1 8 0"; do timeout 25 python3 .gpu/graph_diag.py $c > "$G/graph-${c// /-}.log" 2>&1; grep -E "CAPTURED|FAILED" "$G/graph-${c// /-}.log"; done; pack
B="python3 -X faulthandler -m fastrnn.bench --device cuda --min-time 0.03 --repeats 5 --warmup 1"
timeout 40 $B --cell LSTM --dtype bfloat16 float16 --T 1024 --B 16 --H 768 --backend auto step --out $G/bench-goal > $G/bench-goal.log 2>&1; echo goal rc=$?; grep -E "^LSTM" $G/bench-goal.log; pack
timeout 50 $B --cell LSTM GRU RNN_TANH --dtype float32 bfloat16 --T 1 4 16 --B 8 --H 256 --backend auto step persistent --out $G/bench-steps > $G/bench-steps.log 2>&1; echo steps rc=$?; pack
timeout 40 $B --cell RNN_RELU --dtype bfloat16 float16 --T 100 --B 1 16 64 --H 256 1024 --backend auto step --out $G/bench-relu > $G/bench-relu.log 2>&1; echo relu rc=$?; tail -3 $G/bench-relu.log; pack
timeout 90 $B --grid gpu --dtype float32 --backend auto step persistent --out $G/bench-f32 > $G/bench-f32.log 2>&1; echo f32 rc=$?; tail -2 $G/bench-f32.log; pack
