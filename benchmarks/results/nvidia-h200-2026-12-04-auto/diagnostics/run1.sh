# One call: build, the GPU tests (cells included), then the benchmarks against cuDNN.
export FASTRNN_COMMIT=$(cat .gpu/commit) PYTHONUNBUFFERED=1
G=/tmp/gc; mkdir -p $G
pack() { tar czf $OUT/gc.tgz -C /tmp gc; }
python3 scripts/gpu_check.py $G --budget 215 --only environment build kernel-library persistent-smoke tests-ops tests-persistent tests-modules tests-cuda > $G/main.log 2>&1
cat $G/summary.txt; pack
B="python3 -X faulthandler -m fastrnn.bench --device cuda --min-time 0.03 --repeats 5 --warmup 1"
timeout 50 $B --cell LSTM --dtype bfloat16 float16 --T 1024 --B 16 --H 768 --backend auto persistent --out $G/bench-goal > $G/bench-goal.log 2>&1; echo goal rc=$?; grep -E "^LSTM" $G/bench-goal.log; pack
timeout 190 $B --grid gpu --backend auto persistent --out $G/bench-gpu > $G/bench-gpu.log 2>&1; echo gpu rc=$?; tail -4 $G/bench-gpu.log; pack
timeout 40 $B --grid step --kind cell_loop --backend auto --out $G/bench-loops > $G/bench-loops.log 2>&1; echo loops rc=$?; grep -E "^(LSTM|GRU|RNN)" $G/bench-loops.log; pack
