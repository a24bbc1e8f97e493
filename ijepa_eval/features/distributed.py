"""The distributed plumbing of extraction: loader workers per spare core and the two collectives
get_features uses (each process's rank, world size and device come from ``ijepa_eval.devices``).

Under torchrun (or any initialised process group) shard ``s`` belongs to rank ``s % world_size``; rank 0
plans, broadcasts the plan, waits at a barrier for every rank's shards and commits. Without a process
group every function here is a no-op for one process.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from ijepa_eval.threads import loader_workers


def default_workers(world_size: int) -> int:
    """One loader worker per core of this rank's share (affinity, SLURM_CPUS_PER_TASK, the ranks on the node)
    but one: JPEG decoding and resizing feed a ViT-H on one GPU only with many workers. Printed once."""
    return loader_workers(int(os.environ.get("LOCAL_WORLD_SIZE", world_size)), announce=True)


def broadcast(obj: Any) -> Any:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]
    return obj


def barrier(device: torch.device) -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        # NCCL needs to know the rank's GPU (else it guesses and may hang); gloo takes no device
        nccl = dist.get_backend() == "nccl" and device.type == "cuda"
        dist.barrier(device_ids=[device.index]) if nccl else dist.barrier()
