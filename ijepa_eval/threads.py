"""CPU thread sizing that respects the cores this process may actually use.

torch starts one intra-op thread per physical core of the machine and every DataLoader worker is one
more busy process; on a 2-core box shared with another torch job that oversubscribes the cores, and
OpenMP's spin-waiting threads then slow each step down by an order of magnitude (issue 11: a 0.2 s
pretraining step took ~3 s). So threads come from what is available: the CPU affinity mask (cgroups,
taskset, SLURM), capped by ``OMP_NUM_THREADS`` when the user set it, minus the loader workers, minus the
cores other processes keep busy right now (when ``share_with_load``).
"""

from __future__ import annotations

import os
import time

MAX_LOADER_WORKERS = 12  # JPEG decoding for a ViT-H on one GPU; more only adds memory


def available_cores() -> int:
    """Cores this process may run on: the affinity mask, capped by a valid ``OMP_NUM_THREADS``."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
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


def loader_workers(processes_per_node: int = 1) -> int:
    """Default DataLoader workers: one per spare core of this process's share, at most 12."""
    return max(0, min(MAX_LOADER_WORKERS, available_cores() // max(1, processes_per_node) - 1))


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
