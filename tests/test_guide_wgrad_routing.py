"""Which 3x3 weight gradients of the guide's training go to kpnt's TF32
kernel (kernels/guide_wgrad.cu): the routing as measured in session 42
(faster than cuDNN at the Bayer guide's 64 channels, slower at X-Trans's
128).  The routing is plain Python; the kernel's own tests are
tests/cuda/test_guide_wgrad.py."""
import pytest
import torch

from kpnt.ops._cuda import guide_train


def takes_kernel(C, dtype=torch.float32, w_shape=None):
    g = torch.zeros(1, C, 4, 4, dtype=dtype)
    return guide_train._wgrad_kernel(g, torch.zeros(w_shape or (C, C, 3, 3), dtype=dtype))


@pytest.fixture
def tf32_on(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)


def test_bayer_guide_width_takes_the_kernel_and_xtrans_width_does_not(tf32_on):
    assert takes_kernel(64)
    assert not takes_kernel(128)
    assert set(guide_train.WGRAD_WIDTHS) <= set(guide_train.WGRAD_COMPILED_WIDTHS)


def test_no_kernel_without_tf32_for_bfloat16_or_other_shapes(monkeypatch, tf32_on):
    assert not takes_kernel(64, torch.bfloat16)
    assert not takes_kernel(64, w_shape=(64, 32, 3, 3))       # not C -> C
    assert not takes_kernel(32)                               # not compiled
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    assert not takes_kernel(64)                               # TF32 off: cuDNN's exact float32 gradient
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    monkeypatch.setattr(guide_train, "FUSED_WGRAD", False)
    assert not takes_kernel(64)


def test_wgmma_form_only_where_routed_on_a_gpu(monkeypatch):
    """The Hopper form is asked for only with WGRAD_WGMMA, channels in
    WGRAD_WGMMA_WIDTHS and a CUDA tensor (whose GPU is then asked whether it
    runs sm_90a code)."""
    monkeypatch.setattr(guide_train, "WGRAD_WGMMA", True)
    assert not guide_train._wgrad_wgmma(torch.zeros(1, 64, 4, 4))            # a CPU tensor: no GPU to ask
    asked = []
    monkeypatch.setattr(guide_train, "wgmma_built", lambda index: asked.append(index) or True)
    cuda_like = torch.zeros(1, 64, 4, 4, device="meta")
    assert not guide_train._wgrad_wgmma(cuda_like) and asked == []
    monkeypatch.setattr(guide_train, "WGRAD_WGMMA_WIDTHS", (64,))
    assert not takes_kernel(128)                              # 128 not routed to either form by default
    monkeypatch.setattr(guide_train, "WGRAD_WGMMA", False)
    assert not guide_train._wgrad_wgmma(torch.zeros(1, 64, 4, 4))
