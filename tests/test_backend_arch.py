"""The architectures the fused kernels are built for (kpnt._backend): Hopper
as sm_90a, so that the guide block's wgmma kernel exists in the build."""
import pytest

from kpnt import _backend


@pytest.mark.parametrize("given,built", [
    ("9.0", "9.0a"),
    ("9.0a", "9.0a"),
    ("8.0;9.0", "8.0;9.0a"),
    ("8.6 9.0", "8.6;9.0a"),
    ("9.0+PTX", "9.0+PTX"),       # portable PTX stays portable
    ("8.9;10.0", "8.9;10.0"),
])
def test_hopper_is_built_with_its_arch_specific_features(given, built):
    assert _backend.with_hopper_features(given) == built


def test_build_flags_carry_the_mapped_list():
    assert _backend.build_flags("9.0")["arch"] == "9.0a"
    assert _backend.build_flags("8.0")["arch"] == "8.0"
