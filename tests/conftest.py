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


#: the longest test files (``--durations=0`` on a 2-core AMD EPYC), longest first; `make test` hands them
#: to its two workers first (``--no-loadscope-reorder``), so that neither is left with a long file at the end
LONGEST_FILES = ("test_sft.py", "test_pipeline.py", "test_alfworld.py", "test_autoexplore_failures_benchmark.py",
                 "test_fault_injection.py", "test_endpoint_cli.py", "test_rl.py", "test_rl_loop_benchmark.py",
                 "test_textworld.py", "test_autoexplore.py", "test_seeds.py", "test_pretrained_budget_benchmark.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: place for place, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file keeps its own order


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
