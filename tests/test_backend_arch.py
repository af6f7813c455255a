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
    assert _backend.with_hopper_features(given, "13.0") == built
    assert _backend.with_hopper_features(given, "12.1") == built


@pytest.mark.parametrize("cuda", ["11.8", None, "rocm"])
def test_compilers_without_sm90a_keep_the_list(cuda):
    """CUDA 11.8 has no compute_90a (torch still ships such builds); a CPU
    torch has no CUDA version at all."""
    assert _backend.with_hopper_features("8.0;9.0", cuda) == "8.0;9.0"


def test_build_flags_carry_the_mapped_list(monkeypatch):
    import torch

    monkeypatch.setattr(torch.version, "cuda", "12.8")
    assert _backend.build_flags("9.0")["arch"] == "9.0a"
    assert _backend.build_flags("8.0")["arch"] == "8.0"
    monkeypatch.setattr(torch.version, "cuda", "11.8")
    assert _backend.build_flags("9.0")["arch"] == "9.0"


def test_sources_digest_names_the_kernels_not_the_tree(tmp_path, monkeypatch):
    """The benchmark's header names its kernels by this digest: it follows the
    sources in $KPNT_KERNELS_DIR and ignores files that are not sources."""
    for name in ("mlp.cu", "wgmma.cuh"):
        (tmp_path / name).write_text(f"// {name}\n")
    monkeypatch.setenv("KPNT_KERNELS_DIR", str(tmp_path))
    first = _backend.sources_digest()
    (tmp_path / "notes.txt").write_text("not a source")
    assert _backend.sources_digest() == first
    (tmp_path / "wgmma.cuh").write_text("// wgmma.cuh, changed\n")
    assert _backend.sources_digest() != first
