# Sourced by the GPU-call scripts that profile with Nsight Compute (s40_one.sh since session 40, s42_three.sh):
# profile_one, which writes one kernel launch's full report as text into $OUT and shows what tells memory- from
# latency-bound and the top stall reasons.
SECTIONS="--set full"   # the stall metrics the raw page is read for below (session 30 read them so)
# ncu over $2 (a command) for the kernels matching regex $1 (demangled names), skipping $3 launches, into
# $OUT/$4.txt; the lines that tell memory- from latency-bound shown.
profile_one() {
    PYTHONPATH=$PWD timeout 150 ncu --kernel-name-base demangled --kernel-name "regex:$1" --launch-skip $3 --launch-count 1 \
        $SECTIONS -o /tmp/$4 $2 > /tmp/$4.log 2>&1 || tail -5 /tmp/$4.log
    # Session 42: the four front_bwd profiles made no report and ncu exited 0 (no kernel matched?): say why.
    [ -f /tmp/$4.ncu-rep ] || { echo "--- $4: no report; ncu's log ends:"; grep -v "^\s*$" /tmp/$4.log | tail -6; }
    ncu -i /tmp/$4.ncu-rep --print-details all > $OUT/$4.txt 2>&1
    echo "--- $4: $(grep -m1 -oE "[a-z_]+kernel<.{0,90}" $OUT/$4.txt)"   # which launch it profiled
    grep -E "^\s+(Duration|Memory Throughput|DRAM Throughput|L1/TEX Hit Rate|L2 Hit Rate|Compute \(SM\) Throughput|\
Warp Cycles Per Issued Instruction|Achieved Occupancy|SM Frequency)" $OUT/$4.txt | head -16
    # The stall reasons, cycles per issued instruction (as session 30's tools/gpu_calls/s30_stalls.sh read them).
    ncu -i /tmp/$4.ncu-rep --page raw --csv 2>/dev/null | python -c "
import csv, sys
rows = list(csv.reader(sys.stdin))
stalls = [(n, v) for n, v in zip(rows[0], rows[-1])
          if 'issue_stalled' in n and ('per_warp_active' in n or 'per_issue_active' in n) and 'not_issued' not in n]
def num(v):
    try: return float(v.replace(',', ''))
    except ValueError: return 0.0
for n, v in sorted(stalls, key=lambda s: -num(s[1]))[:8]: print('   ', n, v)" | tee -a $OUT/$4.txt   # a call returns at most 8 files
}
# Writes to $1 a Python script that runs kpnt's TF32 weight-gradient kernel alone three times on random channels-last
# operands of shape N C H W ($2..$5), for profile_one to wrap; $6 True for its wgmma form (default False), $7 True
# for the warp-specialized one.
wgrad_alone_script() {
    cat > "$1" <<PY
import torch
from kpnt.ops._cuda.extension import ext, unwrap
g = torch.Generator().manual_seed(1)
gh, z = (t.cuda().contiguous(memory_format=torch.channels_last) for t in
         (torch.randn($2, $3, $4, $5, generator=g) * 1e-3, torch.randn($2, $3, $4, $5, generator=g).relu()))
for _ in range(3):
    unwrap(ext().guide_wgrad(gh, z, ${6:-False}, ${7:-False}))
torch.cuda.synchronize()
PY
}
