from __future__ import annotations

import pytest
import torch
from tiny_specs import tiny_spec_dict


@pytest.fixture
def tiny() -> dict:
    """A spec dict that trains in well under a second."""
    return tiny_spec_dict()


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: one intra-op thread avoids OpenMP spin-waits on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
