"""Thread sizing: torch threads + loader workers fit the cores that are actually free."""

import os

import pytest
import torch

from ijepa_eval import threads


@pytest.fixture(autouse=True)
def _restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_available_cores_follow_affinity_and_omp(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5})
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert threads.available_cores() == 6
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert threads.available_cores() == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "junk")  # ignored, as OpenMP ignores it
    assert threads.available_cores() == 6
    assert threads.loader_workers() == 5 and threads.loader_workers(processes_per_node=2) == 2


@pytest.mark.parametrize("busy, workers, expected", [(0, 0, 6), (0, 2, 4), (3, 0, 3), (5, 2, 1), (9, 0, 1)])
def test_fit_threads_leaves_busy_cores_and_workers(monkeypatch, busy, workers, expected):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(6)))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "busy_cores", lambda: busy)
    assert threads.fit_threads(workers) == expected == torch.get_num_threads()


def test_busy_cores_reads_running_threads_without_counting_itself():
    assert 0 <= threads.busy_cores(samples=3) < 1000
