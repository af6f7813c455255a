# Sourced by the GPU-call scripts written from session 29 on (the earlier ones repeat these lines and are kept as
# the records of what ran): the environment, the device's name, kpnt installed without its dependencies, and the
# kernels built once with the time it took and the architecture they were built for.
export TORCH_CUDA_ARCH_LIST=9.0 PYTHONUNBUFFERED=1
nvidia-smi -L
pip install -q -e . --no-deps --no-build-isolation > /dev/null 2>&1
python -c "
import time, kpnt._backend as b
t = time.time(); b.load(); print('kernels built in %.1f s, arch %s' % (time.time() - t, b.build_flags()['arch']))"
# A tool of tools/ with module switches set first: $1 python statements (g is kpnt.ops._cuda.guide_train), $2 the
# output file, $3 the tool's file name, then its arguments. Exported, so `bash -c "tool ..."` under timeout finds it.
tool() {
    local pre=$1 out=$2 name=$3
    shift 3
    python -c "
import runpy, sys
import kpnt.ops._cuda.guide_train as g
$pre
sys.argv = ['$name'] + sys.argv[1:]
sys.path.insert(0, 'tools')   # the tools import their sibling modules
runpy.run_path('tools/$name', run_name='__main__')" "$@" > $out 2>&1
}
export -f tool
# bench_kernels.py through `tool`: $1 python statements, $2 the output file, then bench_kernels.py's arguments.
bench() {
    local pre=$1 out=$2
    shift 2
    tool "$pre" "$out" bench_kernels.py "$@"
}
export -f bench
# Every CUDA test under a limit of $1 seconds into $OUT/tests.txt, and its failures and summary line shown.
cuda_tests() {
    timeout "$1" python -m pytest -q -p no:cacheprovider tests/cuda > $OUT/tests.txt 2>&1
    grep -E "^FAILED|^ERROR|passed|failed" $OUT/tests.txt | head -20
}
# cuda_tests, then success only if some test passed and none failed or errored (the scripts' gate for later parts).
cuda_tests_pass() {
    cuda_tests "$1"
    grep -qE " passed" $OUT/tests.txt && ! grep -qE "failed|^ERROR" $OUT/tests.txt
}
# compute-sanitizer's memcheck over the guide's passes under a limit of $1 seconds into $OUT/memcheck.txt.
guide_memcheck() {
    timeout "$1" compute-sanitizer --tool memcheck python tools/mlp_sanitize_run.py --guide --no-mlp \
        > $OUT/memcheck.txt 2>&1
    grep -E "ERROR SUMMARY|ok|done" $OUT/memcheck.txt | tail -6
}
# pytest over $2.. (test files) under a limit of $1 seconds into $OUT/tests.txt, its failures shown; success only if
# some test passed and none failed or errored (session 43's gate for one kernel's tests).
tests_pass() {
    local limit=$1
    shift
    timeout "$limit" python -m pytest -q -p no:cacheprovider "$@" > $OUT/tests.txt 2>&1
    grep -E "^FAILED|^ERROR|passed|failed|assert|Error" $OUT/tests.txt | head -30
    grep -qE " passed" $OUT/tests.txt && ! grep -qE "failed|^ERROR" $OUT/tests.txt
}
# compute-sanitizer's tool $1 (memcheck, synccheck, racecheck) under a limit of $2 seconds over the weight-gradient
# kernel's wgmma form ($4 True: its warp-specialized form) at the shapes $3 (a Python list of (N, C, H, W) tuples),
# into $OUT/$1.txt (session 43).
wgrad_sanitize() {
    cat > /tmp/wgrad_sanitize.py <<PY
import torch
from kpnt.ops._cuda.extension import ext, unwrap
for shape in $3:
    g = torch.randn(*shape, device="cuda").contiguous(memory_format=torch.channels_last)
    z = torch.randn(*shape, device="cuda").relu().contiguous(memory_format=torch.channels_last)
    dw = unwrap(ext().guide_wgrad(g, z, True, ${4:-False}))
    torch.cuda.synchronize()
    print("ok", shape, float(dw.abs().sum()))
PY
    PYTHONPATH=$PWD timeout "$2" compute-sanitizer --tool $1 python /tmp/wgrad_sanitize.py > $OUT/$1.txt 2>&1
    grep -E "ERROR SUMMARY|RACECHECK SUMMARY|^ok|rror" $OUT/$1.txt | head -8
}
