"""Thread sizing: torch threads + loader workers fit the cores that are actually free."""

import io
import os
import types

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
    assert 0 <= threads.busy_cores(samples=3) < 1000  # the real /proc/stat parses


def test_busy_cores_is_the_median_of_procs_running_minus_this_thread(monkeypatch):
    running = iter([3, 5, 4, 7, 2])  # minus this thread: 2, 4, 3, 6, 1 -> median 3

    def fake_open(path, *args, **kwargs):
        assert path == "/proc/stat"
        return io.StringIO(f"cpu  1 2 3 4\nprocs_running {next(running)}\nprocs_blocked 0\n")

    monkeypatch.setattr(threads, "open", fake_open, raising=False)
    monkeypatch.setattr(threads, "time", types.SimpleNamespace(sleep=lambda s: None))
    assert threads.busy_cores(samples=5) == 3

    def missing(path, *args, **kwargs):
        raise FileNotFoundError(path)

    monkeypatch.setattr(threads, "open", missing, raising=False)  # no /proc (macOS): nothing known is busy
    assert threads.busy_cores() == 0
