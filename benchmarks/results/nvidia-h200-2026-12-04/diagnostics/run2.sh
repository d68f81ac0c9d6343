export FASTRNN_COMMIT=e59eb91dc397bd842afccda7ba4a5d662b236d52 PYTHONUNBUFFERED=1
G=/tmp/gc; mkdir -p $G
python3 scripts/gpu_check.py $G --budget 170 --only environment build device-check kernel-library persistent-smoke tests-persistent tests-modules tests-cuda > $G/main.log 2>&1
cat $G/summary.txt
for a in "0 64 256" "1 64 256" "auto 64 256" "1,0,1,auto 64 256"; do set -- $a; timeout 40 python3 .gpu/repro.py $1 $2 $3 > $G/repro-$1.log 2>&1; echo "repro $1 rc=$?"; tail -4 $G/repro-$1.log; done
timeout 30 python3 .gpu/graph.py global 0 > $G/graph-fwd.log 2>&1; grep graph $G/graph-fwd.log
timeout 30 python3 .gpu/graph.py relaxed 1 > $G/graph-relaxed.log 2>&1; grep graph $G/graph-relaxed.log
B="python3 -X faulthandler -m fastrnn.bench --device cuda"
timeout 80 $B --grid gpu --mode fwd --min-time 0.03 --repeats 5 --warmup 1 --out $G/bench-gpu-fwd > $G/bench-gpu-fwd.log 2>&1; echo gpu-fwd rc=$?
timeout 100 $B --grid anchors --min-time 0.1 --out $G/bench-anchors > $G/bench-anchors.log 2>&1; echo anchors rc=$?
timeout 100 $B --grid gpu --mode fwdbwd --min-time 0.03 --repeats 5 --warmup 1 --out $G/bench-gpu-fwdbwd > $G/bench-gpu-fwdbwd.log 2>&1; echo gpu-fwdbwd rc=$?
