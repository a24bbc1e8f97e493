"""CPU thread sizing that respects the cores this process may actually use.

torch starts one intra-op thread per physical core of the machine and every DataLoader worker is one
more busy process; on a 2-core box shared with another torch job that oversubscribes the cores, and
OpenMP's spin-waiting threads then slow each step down by an order of magnitude (issue 11: a 0.2 s
pretraining step took ~3 s). So threads come from what is available: the CPU affinity mask (cgroups,
taskset, SLURM), capped by ``OMP_NUM_THREADS`` when the user set it, minus the loader workers, minus the
cores other processes keep busy right now (when ``share_with_load``).

Loader workers are sized from the cores of this *rank* instead: the affinity mask, capped by
``SLURM_CPUS_PER_TASK``, shared by the ranks torchrun starts in it (``LOCAL_WORLD_SIZE``); never by
``OMP_NUM_THREADS``, which torchrun sets to 1 for every rank.
"""

from __future__ import annotations

import os
import sys
import time

# Each worker is a process with torch imported (~0.3 GB). A ViT-H/14 in bf16 takes ~3.5k img/s on one GPU:
# 5-9 cores of `decode: tensor`, ~10-17 of the PIL path; past 32 a worker adds start-up time and memory.
MAX_LOADER_WORKERS = 32
_announced = False


def affinity_cores() -> int:
    """Cores in this process's affinity mask (cgroups, taskset, srun's binding)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def available_cores() -> int:
    """Cores this process may run on: the affinity mask, capped by a valid ``OMP_NUM_THREADS``."""
    cores = affinity_cores()
    omp = os.environ.get("OMP_NUM_THREADS", "")
    if omp.isdigit() and int(omp) > 0:
        cores = min(cores, int(omp))
    return max(1, cores)


def busy_cores(samples: int = 5) -> int:
    """Cores other processes keep busy now: runnable threads in /proc/stat minus this one (median of a few
    samples), 0 where that is unknown. Instantaneous, unlike the load average, so our own earlier work in
    the same run does not count."""
    counts = []
    for _ in range(samples):
        try:
            with open("/proc/stat") as f:
                line = next(ln for ln in f if ln.startswith("procs_running"))
        except (OSError, StopIteration):
            return 0
        counts.append(max(0, int(line.split()[1]) - 1))
        time.sleep(0.01)
    return sorted(counts)[len(counts) // 2]


def rank_cores(processes_per_node: int | None = None) -> tuple[int, str]:
    """(cores for this rank's loader, how that was decided). ``processes_per_node`` None = torchrun's
    ``LOCAL_WORLD_SIZE`` (1 without torchrun): the ranks it starts share one affinity mask."""
    cores = affinity_cores()
    why = [f"affinity {cores}"]
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if slurm.isdigit() and 0 < int(slurm) < cores:
        cores = int(slurm)
        why.append(f"SLURM_CPUS_PER_TASK {cores}")
    local = os.environ.get("LOCAL_WORLD_SIZE", "")
    ranks = processes_per_node or (int(local) if local.isdigit() and int(local) > 0 else 1)
    if ranks > 1:
        cores = max(1, cores // ranks)
        why.append(f"{ranks} ranks on the node")
    return cores, ", ".join(why)


def loader_workers(processes_per_node: int | None = None, *, announce: bool = False) -> int:
    """Default DataLoader workers: one per core of this rank's share but one (for the main process), at
    most MAX_LOADER_WORKERS. ``announce`` prints the choice once per process (rank 0 only)."""
    global _announced
    cores, why = rank_cores(processes_per_node)
    workers = max(0, min(MAX_LOADER_WORKERS, cores - 1))
    if announce and not _announced and os.environ.get("RANK", "0") == "0":
        _announced = True
        print(f"loader: {workers} workers for {cores} cores of this rank ({why}); --workers to change",
              file=sys.stderr)
    return workers


def fit_threads(workers: int = 0, *, share_with_load: bool = True) -> int:
    """Set torch's intra-op threads so that they plus ``workers`` loader processes fit the free cores.

    Returns the thread count. Never below 1; never above what ``available_cores`` allows.
    """
    import torch

    cores = available_cores()
    free = cores - busy_cores() if share_with_load else cores
    threads = max(1, min(cores, free) - workers)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads
