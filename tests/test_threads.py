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


def test_loader_workers_follow_the_ranks_share_of_cores_not_omp(monkeypatch, capsys):
    """torchrun sets OMP_NUM_THREADS=1 per rank: that limits intra-op threads, not loader processes."""
    for var in ("SLURM_CPUS_PER_TASK", "LOCAL_WORLD_SIZE", "RANK"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(96)))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert threads.loader_workers() == threads.MAX_LOADER_WORKERS == 32  # a 96-core workstation, one GPU
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")  # torchrun --nproc_per_node 8: 12 cores per rank
    assert threads.rank_cores() == (12, "affinity 96, 8 ranks on the node") and threads.loader_workers() == 11
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "64")  # sbatch -c 64 on a bigger node, 8 ranks in the task
    assert threads.rank_cores() == (8, "affinity 96, SLURM_CPUS_PER_TASK 64, 8 ranks on the node")
    assert threads.loader_workers(processes_per_node=1) == 32 and threads.loader_workers(processes_per_node=64) == 0
    monkeypatch.setattr(threads, "_announced", False)
    threads.loader_workers(announce=True)
    threads.loader_workers(announce=True)
    printed = capsys.readouterr().err
    assert printed.count("loader: 7 workers for 8 cores of this rank") == 1 and "--workers" in printed
    monkeypatch.setattr(threads, "_announced", False)
    monkeypatch.setenv("RANK", "3")  # one line per job, from rank 0
    threads.loader_workers(announce=True)
    assert capsys.readouterr().err == ""
