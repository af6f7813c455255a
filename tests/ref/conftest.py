"""The reference-op tests run tiny graphs: one thread avoids OpenMP
spin-waits when the machine is shared (results do not depend on it)."""
import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
