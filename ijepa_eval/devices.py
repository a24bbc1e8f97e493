"""Where tensors live: the device rules every room shares (probes, extraction, fine-tuning, pretraining).

One module, so a CUDA fact is fixed once and tested once on CPU with faked CUDA queries: ``cuda`` and
``cuda:0`` name the same GPU but compare unequal, so devices are normalised before any comparison; and
``torch.cuda.mem_get_info`` counts memory PyTorch's caching allocator has reserved but not handed out as
used, although the next tensor of this process can take it.
"""

from __future__ import annotations

import torch

DeviceLike = str | torch.device


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
