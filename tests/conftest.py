"""Shared test set-up."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One torch thread per test worker: the suite runs on 2 cores with 2 xdist workers, and
    oversubscribed torch threads spin and run up to 30x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
