"""Where tensors live: the device rules every room shares (extraction, probes, fine-tuning, pretraining).

One module, so a CUDA fact is fixed once and tested once on CPU (faked CUDA queries, gloo process groups):

- each process's device: under torchrun every process takes ``cuda:LOCAL_RANK`` and joins the process group
  with NCCL bound to that GPU (``device_id``), before anything talks to a GPU — two ranks on one GPU make
  NCCL fail ("Duplicate GPU detected") at their first collective;
- ``cuda`` and ``cuda:0`` name the same GPU but compare unequal: devices are normalised before comparing;
- ``torch.cuda.mem_get_info`` counts memory PyTorch's caching allocator has reserved but not handed out as
  used, although the next tensor of this process can take it;
- a module lent to the GPU for one job (the encoder during extraction) goes back where it came from.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch
from torch import nn

from ijepa_eval.errors import ConfigError

DeviceLike = str | torch.device


def parse_device(device: DeviceLike | None) -> torch.device:
    """``None`` = CUDA when available, else the CPU; a one-line error for a malformed name."""
    try:
        return torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError:
        raise ConfigError(f"invalid device {device!r}; use cpu, cuda or cuda:N") from None


def rank_device(requested: torch.device, local_rank: int, local_world: int, visible: int) -> torch.device:
    """The device of the process ``local_rank`` of ``local_world`` processes on this node, ``visible`` GPUs.

    ``cuda`` = ``cuda:local_rank``; an explicit ``cuda:N`` is refused when several processes share the node
    and N is not this process's own GPU (they would all land on it). Pure, so tested without a GPU.
    """
    if requested.type != "cuda":
        return requested
    if visible == 0:
        raise ConfigError("device 'cuda' requested but CUDA is not available; pass --device cpu")
    index = local_rank if requested.index is None else requested.index
    if local_world > 1 and index != local_rank:
        raise ConfigError(f"--device {requested} names one GPU for the {local_world} processes torchrun started on "
                          "this node; pass --device cuda (each process takes cuda:LOCAL_RANK)")
    if index >= visible:
        if local_world > 1:
            raise ConfigError(f"torchrun started {local_world} processes on this node but {visible} CUDA device(s) "
                              f"are visible; use --nproc_per_node {visible} or fewer")
        raise ConfigError(f"device 'cuda:{index}' does not exist: {visible} CUDA device(s) visible")
    return torch.device("cuda", index)


def process_device(device: DeviceLike | None = None) -> tuple[int, int, torch.device]:
    """(rank, world_size, device) of this process: what every entry point calls before touching a GPU.

    Under torchrun (``WORLD_SIZE`` > 1) the process group is joined here unless it already is: NCCL for
    CUDA, bound to this process's GPU with ``device_id`` (no guessed GPU, no barrier warnings), gloo for
    CPU runs. A process group set up by the caller is used as it is.
    """
    import torch.distributed as dist

    requested = parse_device(device)
    joined = dist.is_available() and dist.is_initialized()
    world = dist.get_world_size() if joined else int(os.environ.get("WORLD_SIZE", "1"))
    rank = dist.get_rank() if joined else int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", rank)) if world > 1 else 0
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world)) if world > 1 else 1
    visible = torch.cuda.device_count() if requested.type == "cuda" and torch.cuda.is_available() else 0
    dev = rank_device(requested, local_rank, local_world, visible)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)  # the current device is what collectives and "cuda" tensors default to
    if world > 1 and not joined:
        if dev.type == "cuda":
            dist.init_process_group("nccl", device_id=dev)
        else:
            dist.init_process_group("gloo")
    return rank, world, dev


def is_main_process() -> bool:
    """Rank 0, or the only process: the one that writes shared files and prints summaries."""
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


@contextlib.contextmanager
def lent_to(module: nn.Module, device: torch.device) -> Iterator[nn.Module]:
    """``module`` on ``device`` for the block, then back on the device it came from: the encoder's weights
    (2.5 GB for ViT-H) do not stay on the GPU while the probes that follow need its memory."""
    home = next(iter(module.parameters()), torch.empty(0)).device
    module.to(device)
    try:
        yield module
    finally:
        module.to(home)


def normalize(device: DeviceLike) -> torch.device:
    """The device with its index filled in (``cuda`` -> ``cuda:<current device>``), so equal means same GPU."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def same_device(a: DeviceLike, b: DeviceLike) -> bool:
    return normalize(a) == normalize(b)


def free_bytes(device: DeviceLike) -> int | None:
    """Bytes a new tensor of this process can take on a CUDA ``device``; None for the host (not bounded here).

    The driver's free memory plus what PyTorch holds in reserve (reserved − allocated): after one probe's
    features are freed, their blocks stay reserved by the caching allocator, and the next probe can reuse
    them. Without them the second fit on 24 GiB of ImageNet features would believe the GPU full.
    """
    device = normalize(device)
    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))


def fits(nbytes: int, device: DeviceLike, fraction: float = 0.5) -> bool:
    """Whether ``nbytes`` take at most ``fraction`` of what ``device`` has free (always True on the host):
    the rest stays for the activations, gradients and temporaries of the work that follows."""
    free = free_bytes(device)
    return free is None or nbytes <= fraction * free
