"""Where image batches meet the frozen encoder: device, normalisation, memory format and precision, in one place.

Extraction into the cache (pooled blocks or patch tokens), the augmented linear probe (``--aug paper``, in
chunks) and the attentive probes (online training and evaluation) all encode through here, so a change to
how batches reach the encoder reaches every path at once:

- ``lent_encoder``: the encoder is lent to the device for one job (``devices.lent_to``: its weights go back
  where they came from afterwards, so they do not hold GPU memory the probes need), channels-last on CUDA
  (the patch embedding's convolution is faster in NHWC; attention goes through SDPA, timm's fused path);
- ``device_batches``: loaders ship uint8 images, and the device converts and normalises them (and, for
  training transforms, erases at random) one batch ahead on a side stream on CUDA (``data.device``: timm's
  PrefetchLoader pattern), handing channels-last float batches to the encoder;
- ``encode``: the forward, under bf16 autocast on CUDA and in float32 on the CPU.

    with lent_encoder(encoder, device):
        for images, labels in device_batches(loader, device):
            tokens = encode(encoder, images, tokens=True)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

from ijepa_eval.data.device import DevicePreprocess, prefetch
from ijepa_eval.devices import lent_to


@contextlib.contextmanager
def lent_encoder(encoder: Any, device: torch.device) -> Iterator[Any]:
    """``encoder`` on ``device`` (channels-last on CUDA) for the block, then back where it came from."""
    with lent_to(encoder, device):
        if device.type == "cuda":
            encoder.to(memory_format=torch.channels_last)
        yield encoder


def device_batches(batches: Iterable[tuple], device: torch.device, *, images_at: int = 0, seeds_at: int | None = None,
                   transform: Callable | None = None,
                   erasing: Callable[[torch.Tensor], torch.Tensor] | None = None) -> Iterator[tuple]:
    """``batches`` (tuples) with the uint8 images at position ``images_at`` (None passes: a batch of bad
    images only) turned into the encoder's input on ``device``: float32, normalised, channels-last on CUDA,
    one batch ahead on CUDA. ``transform`` is the ``decode: gpu`` geometry run on the device; ``erasing``
    runs on the normalised batch, per image under the item seeds at ``seeds_at`` when given (a batch split
    over ranks is erased as one process would erase it)."""
    prep = DevicePreprocess(device, transform=transform, erasing=erasing, channels_last=device.type == "cuda")

    def prepare(batch: tuple) -> tuple:
        images, out = batch[images_at], list(batch)
        if images is not None:
            out[images_at] = prep(images, None if seeds_at is None else batch[seeds_at].tolist())
        return tuple(out)

    return prefetch(batches, prepare, device)


def encode(encoder: Any, images: torch.Tensor, *, tokens: bool = False, n_last_blocks: int = 1,
           inference: bool = True) -> Any:
    """``encoder.forward_pooled`` ({pool: [B, n, D]}) or, with ``tokens``, ``forward_tokens`` ([B, N, D]) of
    one normalised float batch on the encoder's device (what ``device_batches`` yields). ``inference=False``
    runs under ``no_grad`` instead of ``inference_mode``: the outputs then feed heads that are trained on them
    (autograd cannot save inference tensors for backward)."""
    cuda = images.is_cuda
    if cuda:  # a no-op for device_batches' output; other callers (finetune.train.predict) pass NCHW
        images = images.contiguous(memory_format=torch.channels_last)
    with (torch.inference_mode() if inference else torch.no_grad()), torch.autocast("cuda", torch.bfloat16,
                                                                                    enabled=cuda):
        return encoder.forward_tokens(images) if tokens else encoder.forward_pooled(images, n_last_blocks)
