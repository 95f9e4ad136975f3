"""Fixtures shared by the test modules."""

from __future__ import annotations

import os

import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    # one thread per worker (and per process a test starts): workers already fill the cores, and
    # oversubscribed OpenMP threads slow tiny models down many-fold
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def threads_of_the_worker():
    """A test that runs a recipe in-process takes the recipe's ``threads``; the next test gets its worker's back."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from threads; on a busy machine OpenMP barriers made them ~100x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
