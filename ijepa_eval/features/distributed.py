"""The distributed plumbing of extraction: rank and world size (initialising the process group under
torchrun), each rank's device, loader workers per spare core, and the two collectives get_features uses.

Under torchrun (or any initialised process group) shard ``s`` belongs to rank ``s % world_size``; rank 0
plans, broadcasts the plan, waits at a barrier for every rank's shards and commits. Without a process
group every function here is a no-op for one process.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from ijepa_eval.errors import ConfigError
from ijepa_eval.threads import loader_workers


def dist_context() -> tuple[int, int]:
    """(rank, world_size); initialises the process group when launched by torchrun but not yet set up."""
    import torch.distributed as dist

    if dist.is_available() and not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def resolve_device(device: str | torch.device | None, world_size: int) -> torch.device:
    """None = CUDA if present; under torchrun each process takes cuda:LOCAL_RANK."""
    try:
        device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError as err:
        raise ConfigError(f"invalid device {device!r}; use cpu, cuda or cuda:N") from err
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("device 'cuda' requested but CUDA is not available; pass --device cpu")
        if device.index is None:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) if world_size > 1 else 0)
        if device.index >= torch.cuda.device_count():
            raise ConfigError(f"device '{device}' does not exist: {torch.cuda.device_count()} CUDA device(s) visible")
    return device


def default_workers(world_size: int) -> int:
    """One loader worker per spare core this process may use (cgroup/slurm affinity), at most 12: JPEG
    decoding and resizing feed a ViT-H on one GPU only with many workers."""
    return loader_workers(int(os.environ.get("LOCAL_WORLD_SIZE", world_size)))


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
