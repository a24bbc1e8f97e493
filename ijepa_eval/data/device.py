"""Device-side preprocessing: loaders ship uint8 images, the device converts, normalises (and erases).

timm's ``PrefetchLoader`` pattern (timm/data/loader.py): loader workers stop at uint8 [B, 3, H, W] — a
quarter of float32's bytes to pin and copy, and no float work in the workers — and the device of the step
converts and normalises. On CUDA that happens on a side stream one batch ahead, so the next batch's copy
and normalisation overlap this batch's forward. Feature extraction, fine-tuning and the attentive probe
share it:

    loader = DataLoader(get_dataset(..., decode="tensor", transform=eval_transform(name, s, normalize=False)),
                        collate_fn=collate_uint8, pin_memory=True, ...)
    prep = DevicePreprocess(device)
    for images, labels in prefetch(loader, lambda b: (prep(b[0]), b[1].to(device, non_blocking=True)), device):
        ...

With ``decode: gpu`` the batch is a list (encoded JPEG bytes, or host-decoded images of any size): the
device decodes the JPEGs in one nvJPEG call and applies ``transform`` (the uint8 geometry) image by image
before stacking.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import torch
from torch.utils.data import default_collate

from ijepa_eval.data.decode import decode_on_device
from ijepa_eval.data.transforms import IMAGENET_MEAN, IMAGENET_STD, Normalize

Batch = TypeVar("Batch")
ERASING_STREAM = 1  # erase_per_item's stream of an item seed


def collate_images(images: list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
    """One uint8 [B, 3, H, W] tensor when every image has one shape (``default_collate``: in a loader worker
    it stacks straight into shared memory); else the list (``decode: gpu`` items)."""
    first = images[0]
    if first.ndim == 3 and all(image.shape == first.shape for image in images):
        return default_collate(images)
    return list(images)


def collate_uint8(items: list[tuple[Any, ...]]) -> tuple[Any, ...]:
    """``default_collate`` for ``(image, label, ...)`` items whose images may be a ``decode: gpu`` list."""
    images, *rest = zip(*items, strict=True)
    return (collate_images(list(images)), *(default_collate(list(column)) for column in rest))


class DevicePreprocess:
    """uint8 batch (tensor, or ``decode: gpu`` list) on the host -> normalised float32 batch on ``device``.
    A float batch (a dataset with its own float transform) is taken as normalised (and erased) by that
    transform already, and only moved.

    ``transform`` runs per image on the device for list batches only (the uint8 eval or train transform:
    ``eval_transform(name, s, normalize=False)``); ``erasing`` (e.g. timm's ``RandomErasing(device=...)``)
    runs on the normalised batch, as timm's prefetcher applies it; ``channels_last`` suits a conv stem on CUDA.
    """

    def __init__(self, device: torch.device | str, *, transform: Callable | None = None,
                 mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD,
                 erasing: Callable[[torch.Tensor], torch.Tensor] | None = None, channels_last: bool = False) -> None:
        self.device = torch.device(device)
        self.transform, self.erasing, self.channels_last = transform, erasing, channels_last
        self.normalize = Normalize(mean, std)

    def __call__(self, images: torch.Tensor | list[torch.Tensor], seeds: Sequence[int] | None = None) -> torch.Tensor:
        """``seeds`` (one per image) make ``erasing`` a function of each image's seed, not of the batch it
        lands in: a batch split over ranks is erased exactly as one process would erase it."""
        if isinstance(images, list | tuple):
            decoded = decode_on_device(list(images), self.device)
            images = torch.stack([self.transform(image) if self.transform else image for image in decoded])
        x = images.to(self.device, non_blocking=True)
        if x.dtype == torch.uint8:
            x = self.normalize(x)
            if self.erasing is not None:
                x = self.erasing(x) if seeds is None else erase_per_item(x, self.erasing, seeds)
        elif not x.is_floating_point():
            raise TypeError(f"DevicePreprocess takes uint8 images (or float ones already normalised), got {x.dtype}")
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(device={self.device}, transform={self.transform!r}, "
                f"normalize={self.normalize!r}, erasing={self.erasing!r}, channels_last={self.channels_last})")


def erase_per_item(x: torch.Tensor, erasing: Callable[[torch.Tensor], torch.Tensor],
                   seeds: Sequence[int]) -> torch.Tensor:
    """``erasing`` (timm's RandomErasing: python ``random`` decides, torch fills) image by image in place,
    each under a stream of its own seed; the caller's random streams are left as they were.

    The stream is derived from the item seed, not the item seed itself: the loader seeded the image's crop
    with it (``finetune.train.SeededItems``), and the same seed would replay the crop's first draw as the
    erase-or-not draw (timm's crop scale and erasing both open with ``random.random()``), so exactly the
    smallest quarter of crops would be erased."""
    state = random.getstate()
    try:
        for i, seed in enumerate(seeds):
            stream = hash((int(seed), ERASING_STREAM)) & 0x7FFF_FFFF_FFFF_FFFF  # tuple hash of ints: not salted
            with torch.random.fork_rng(devices=[x.device] if x.is_cuda else []):
                random.seed(stream)
                torch.manual_seed(stream)
                erasing(x[i:i + 1])
    finally:
        random.setstate(state)
    return x


def prefetch(batches: Iterable[Batch], prepare: Callable[[Batch], Batch], device: torch.device | str) -> Iterator[Batch]:
    """``prepare(batch)`` for every batch in order; on CUDA one batch ahead on a side stream.

    As timm's PrefetchLoader: the side stream first waits for the consumer's queued work (blocks the
    consumer has released may be handed to the new allocations), and the consumer waits for the side
    stream before it receives a prepared batch. Elsewhere ``prepare`` simply runs in line.
    """
    device = torch.device(device)
    if device.type != "cuda":
        for batch in batches:
            yield prepare(batch)
        return
    side = torch.cuda.Stream(device)
    pending, have = None, False
    for batch in batches:
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            ready = prepare(batch)
        if have:
            yield pending
        torch.cuda.current_stream(device).wait_stream(side)
        pending, have = ready, True
    if have:
        yield pending
