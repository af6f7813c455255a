"""tools/mlp_identity.py's comparison (the saving part needs a GPU): equal
only when every tensor of every case matches bit for bit."""
import sys

import torch

from tool_loader import TOOLS, load_tool

sys.path.insert(0, str(TOOLS))  # the tool imports kbench_common from its folder
identity = load_tool("mlp_identity")


def test_equal_files_compare_equal(capsys):
    a = {"[32, 64, 16, 6] plain": [torch.ones(3), torch.zeros(2)]}
    assert identity.compare(a, {k: [t.clone() for t in v] for k, v in a.items()})
    assert "bitwise equal 2" in capsys.readouterr().out


def test_one_ulp_or_a_missing_case_is_a_difference():
    a = {"c": [torch.ones(3), torch.zeros(2)], "d": [torch.ones(1)]}
    nudged = {"c": [torch.ones(3), torch.tensor([0.0, torch.finfo(torch.float32).tiny])], "d": [torch.ones(1)]}
    assert not identity.compare(a, nudged)
    assert not identity.compare(a, {"c": a["c"]})


def test_bits_not_values_decide():
    """-0.0 and 0.0 are equal values but other bits; a NaN is the same bits as itself."""
    assert not identity.compare({"c": [torch.tensor([0.0])]}, {"c": [torch.tensor([-0.0])]})
    nan = torch.tensor([float("nan"), 1.0])
    assert identity.compare({"c": [nan]}, {"c": [nan.clone()]})
    assert not identity.bitwise_equal(torch.zeros(2), torch.zeros(3))


def test_nondeterminism_alerts_are_counted_by_op_and_the_mode_restored():
    import warnings

    def fn():
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
        for op in ("index_add_cuda_", "index_add_cuda_", "scatter_add_cuda_kernel"):
            warnings.warn(f"{op} does not have a deterministic implementation, but you set "
                          "'torch.use_deterministic_algorithms(True, warn_only=True)'.")
        warnings.warn("an unrelated warning")

    before = torch.are_deterministic_algorithms_enabled()
    assert identity.nondeterministic_ops(fn) == {"index_add_cuda_": 2, "scatter_add_cuda_kernel": 1}
    assert torch.are_deterministic_algorithms_enabled() == before
