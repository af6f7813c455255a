"""The autograd glue of the fused ops (kpnt.ops._cuda) on a CPU: custom ops,
saved tensors, gradients mapped to named inputs, spec round trip, weights
packed to f16 once per forward.  The extension is replaced by a reference
stand-in (tests/_fake_extension.py), so a mistake in the glue fails here
rather than on the GPU machine.  Runs in a subprocess: the CPU kernels it
registers for kpnt's custom ops are process-wide."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def result():
    script = Path(__file__).with_name("_fake_extension.py")
    # the checkout's kpnt, also where it is not pip-installed (the GPU machine)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(script.parents[1]), os.environ.get("PYTHONPATH")])))
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.splitlines()[-1])


@pytest.mark.parametrize("case", ["bayer softmax", "bayer plain", "xtrans softmax", "xtrans plain"])
def test_model_on_the_fused_glue_equals_the_reference(result, case):
    r = result[case]
    # f16-exact weights: the stand-in computes what the reference does, so
    # only float summation order separates them
    assert r["fwd"] < 1e-5 and r["grad"] < 1e-5, r
    assert r["calls"] == ["colour_backward", "colour_forward", "front_backward", "front_forward"]
    assert r["dtypes"] == ["torch.float16"]                  # the extension gets f16 weights
    # four levels, one packed f16 buffer: packed once per forward, not per call
    assert r["colour_calls"] == 4 and r["colour_buffers"] == 1


def test_input_gradients_through_the_reference_around_the_fused_mlp(result):
    assert result["colour dD dvar dW"] < 1e-5
    assert result["front dx dU dS dW"] < 1e-5


@pytest.mark.parametrize("case", ["bayer shared", "bayer per_channel", "xtrans shared", "xtrans per_channel"])
def test_front_taps_in_another_order_give_the_reference_results(result, case):
    """front_level.TAP_ORDER permutes the tap table and, to match, the
    packed weights' tap columns and kernel rows; the stand-in reads the tap
    table it is given, so a permutation applied to one and not the other (or
    inverted) fails here, on the fused backward and on the reference
    fallback for gradients to x and S alike."""
    errors = result["tap order"][case]
    assert errors["U W"] < 1e-5 and errors["x U S W"] < 1e-5, errors
