#!/bin/bash
# For session 30's first call (written in session 29 after its device time ran out; about 7 minutes, nothing to
# carry).  Session 29's last commits changed tests (the level on/off comparisons as shared helpers) and
# tools/kbench_timing.py (the switched rows through one helper); kernels only in comments since its call 6.
#   tests     every CUDA test (the refactored helpers' first run)
#   writebw   the device's write-only and read-only bandwidth (torch fill_ and sum over 8 GB): the ceiling the
#             width-128 backward's two writing kernels (2.4 TB/s in session 29) are measured against
#   bench     tools/bench_kernels.py in full (the models' checks and training steps, point 2's table, the MLP
#             rows through the refactored helper)
# At most 8 files under $OUT.  PARTS (default "tests writebw bench") to run fewer.
PARTS=${PARTS:-tests writebw bench}
source "$(dirname "$0")/preamble.sh"
for part in $PARTS; do
    echo "=== $part"
    case $part in
    tests)
        timeout 200 python -m pytest -q -p no:cacheprovider tests/cuda > $OUT/tests.txt 2>&1
        grep -E "^FAILED|^ERROR|passed|failed" $OUT/tests.txt | head -30 ;;
    writebw)
        timeout 60 python - > $OUT/writebw.txt 2>&1 <<'PY'
import torch
buf = torch.empty(1 << 31, dtype=torch.float32, device="cuda")  # 8 GB
for what, fn in (("write (fill_)", lambda: buf.fill_(1.0)), ("read (sum)", lambda: buf.sum())):
    for _ in range(3):
        fn()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    for _ in range(10):
        fn()
    e.record()
    torch.cuda.synchronize()
    ms = s.elapsed_time(e) / 10
    print(f"{what}: {buf.numel() * 4 / ms / 1e9:.2f} TB/s ({ms:.2f} ms for 8 GB)")
PY
        cat $OUT/writebw.txt ;;
    bench)
        timeout 330 python tools/bench_kernels.py --no-compile --parity-steps 0 --reps 20 > $OUT/bench.txt 2>&1
        grep -E "checks:|FAIL|ratios" $OUT/bench.txt | head -20
        grep -A10 "issue 14's targets" $OUT/bench.txt ;;
    esac
done
