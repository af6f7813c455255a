# Sourced by the GPU-call scripts written from session 29 on (the earlier ones repeat these lines and are kept as
# the records of what ran): the environment, the device's name, kpnt installed without its dependencies, and the
# kernels built once with the time it took and the architecture they were built for.
export TORCH_CUDA_ARCH_LIST=9.0 PYTHONUNBUFFERED=1
nvidia-smi -L
pip install -q -e . --no-deps --no-build-isolation > /dev/null 2>&1
python -c "
import time, kpnt._backend as b
t = time.time(); b.load(); print('kernels built in %.1f s, arch %s' % (time.time() - t, b.build_flags()['arch']))"
