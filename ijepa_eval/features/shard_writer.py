"""The shard writer: loads the planned dataset rows by index, runs the encoder, fills fixed-size shard
buffers and commits each shard to the cache entry as soon as every one of its rows is filled.

Unreadable images come back from the loader as data, not exceptions (one line naming the file, or a
recorded row under ``skip_bad_images``). Features that are NaN or beyond the float16 range raise a
CacheError instead of being stored as inf. ``commit`` seals the entry once every rank's shards are written.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ijepa_eval.data.device import collate_images
from ijepa_eval.errors import CacheError, DatasetError
from ijepa_eval.features.cache import STORAGE_DTYPE, CacheEntry
from ijepa_eval.features.encoding import device_batches, encode, lent_encoder
from ijepa_eval.features.planning import pools_of
from ijepa_eval.threads import fit_threads

LOADER_BOUND = 0.2  # waiting for images more than this share of the loop: warn (loader-bound)
LOADER_BOUND_MIN_S = 10.0  # ... in a loop at least this long (a few batches say nothing; ImageNet takes minutes)


class IndexedImages(Dataset):
    """``(index, image or None, label, error or None)`` for the given dataset indices.

    Unreadable images come back as data, not exceptions, so an error raised in a loader worker still
    reaches the user as one line naming the file (and ``skip_bad_images`` can record the row). With a
    ``decode`` backend (the dataset has no transform of its own) images are read through it and
    ``transform`` runs here, or on the device for ``gpu`` (``transform`` None).
    """

    def __init__(self, dataset: Any, indices: list[int], transform: Callable | None, decode: str | None = None) -> None:
        self.dataset, self.indices, self.transform, self.decode = dataset, indices, transform, decode

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> tuple[int, Any, int, str | None]:
        index = self.indices[k]
        try:
            if self.decode is not None and hasattr(self.dataset, "read"):
                image, label = self.dataset.read(index, self.decode), self.dataset.labels[index]
            else:
                image, label = self.dataset[index]
        except DatasetError as err:
            return index, None, -1, str(err)
        if image is None:  # a dataset built with skip_bad_images=True reports its own bad rows this way
            return index, None, -1, (f"image {index} of '{self.dataset.name}' could not be decoded; "
                                     "replace it or pass skip_bad_images=True (--skip-bad-images)")
        if self.transform is not None:
            image = self.transform(image)
        return index, image, int(label), None


def collate_indexed(items: list[tuple[int, Any, int, str | None]]):
    good = [it for it in items if it[3] is None]
    bad = [(it[0], it[3]) for it in items if it[3] is not None]
    indices = torch.tensor([it[0] for it in good], dtype=torch.long)
    images = collate_images([it[1] for it in good]) if good else None
    labels = torch.tensor([it[2] for it in good], dtype=torch.long)
    return indices, images, labels, bad


class LoaderClock:
    """How long an extraction loop waited for its loader, from the second batch on (the first one pays for
    starting the workers). A loop that waits more than LOADER_BOUND of its time is loader-bound: the
    encoder could go faster than the images arrive."""

    def __init__(self) -> None:
        self.waited = self.elapsed = 0.0
        self.images = 0

    def timed(self, batches: Iterable, size: Callable[[Any], int]) -> Iterator:
        """``batches`` unchanged, timing each wait for the next one; ``size(batch)`` counts its images."""
        iterator = iter(batches)
        first = next(iterator, None)
        if first is None:
            return
        yield first
        started = time.perf_counter()
        while True:
            before = time.perf_counter()
            batch = next(iterator, None)
            if batch is None:
                return
            self.waited += time.perf_counter() - before
            self.images += size(batch)
            yield batch
            self.elapsed = time.perf_counter() - started

    def rates(self) -> tuple[float, float] | None:
        """(images/s the loop achieved = the loader's rate when loader-bound, images/s of the encoder alone)."""
        if self.images == 0 or self.elapsed <= 0:
            return None
        return self.images / self.elapsed, self.images / max(self.elapsed - self.waited, 1e-9)

    def summary(self) -> dict[str, float]:
        """What meta.json's timings keep: the steady loop rate, the encoder's, the share spent waiting."""
        rates = self.rates()
        if rates is None:
            return {}
        return {"loop_images_per_s": round(rates[0], 2), "encoder_images_per_s": round(rates[1], 2),
                "loader_wait_fraction": round(self.waited / self.elapsed, 3)}

    def warning(self, decode: str = "pil", min_seconds: float = LOADER_BOUND_MIN_S) -> str | None:
        """The loader-bound line for a loop of at least ``min_seconds`` that waited too long, else None."""
        rates = self.rates()
        if rates is None or self.elapsed < min_seconds or self.waited <= LOADER_BOUND * self.elapsed:
            return None
        advice = "use --decode tensor or more --workers" if decode == "pil" else "use more --workers"
        return f"loader-bound: {rates[0]:.0f} img/s, encoder {rates[1]:.0f} img/s; {advice}"


class ShardBuffer:
    """Host rows of one shard; knows when every row has been filled (or recorded as unreadable)."""

    def __init__(self, index: int, start: int, stop: int, shape: tuple[int, int], pools: list[str]) -> None:
        self.index, self.start, self.stop = index, start, stop
        self.arrays = {p: np.zeros((stop - start, *shape), dtype=STORAGE_DTYPE) for p in pools}
        self.filled = np.zeros(stop - start, dtype=bool)
        self.bad: list[list[Any]] = []

    def put(self, rows: np.ndarray, outputs: dict[str, np.ndarray]) -> None:
        local = rows - self.start
        for pool, array in self.arrays.items():
            array[local] = outputs[pool]
        self.filled[local] = True

    def mark_bad(self, row: int, message: str) -> None:
        self.bad.append([row, message])
        self.filled[row - self.start] = True

    @property
    def done(self) -> bool:
        return bool(self.filled.all())


class Extraction:
    """Extracts the given shards of one dataset and commits each to ``entry`` as soon as it is full."""

    def __init__(self, encoder: Any, dataset: Any, entry: CacheEntry, *, ranges: list[tuple[int, int]],
                 n_last_blocks: int, device: torch.device, skip_bad_images: bool, tokens: bool = False) -> None:
        self.encoder, self.dataset, self.entry, self.ranges = encoder, dataset, entry, ranges
        self.n_last_blocks, self.device, self.skip_bad_images = n_last_blocks, device, skip_bad_images
        self.tokens = tokens  # last-layer patch tokens [num_patches, D] per row instead of pooled blocks
        self.pools = pools_of(encoder, tokens)
        self.shard_rows = ranges[0][1] - ranges[0][0]
        self.open: dict[int, ShardBuffer] = {}
        self.writes: list[Future] = []

    def run(self, loader: DataLoader, bar: tqdm, writer: ThreadPoolExecutor,
            gpu_transform: Callable | None = None) -> LoaderClock:
        """Extract every batch of ``loader``: its uint8 images become the device's float batch one batch ahead
        (``features.encoding``; ``gpu_transform`` is the ``decode: gpu`` geometry run there). Returns how long
        the loop waited for the loader."""
        self.writer = writer
        cuda = self.device.type == "cuda"
        pending = None  # on CUDA, batch t's device->host copy is consumed after batch t+1 is queued
        clock = LoaderClock()
        batches = device_batches(loader, self.device, images_at=1, transform=gpu_transform)
        with torch.inference_mode():
            for indices, images, labels, bad in clock.timed(batches, lambda b: len(b[0]) + len(b[3])):
                for row, message in bad:
                    self.record_bad(row, message)
                if images is not None:
                    out = encode(self.encoder, images, tokens=self.tokens, n_last_blocks=self.n_last_blocks)
                    out = {"tokens": out} if self.tokens else out
                    host = {p: out[p].to(torch.float16).to("cpu", non_blocking=cuda) for p in self.pools}
                    ready = torch.cuda.Event() if cuda else None
                    if ready is not None:
                        ready.record()
                    if pending is not None:
                        self.store(*pending)
                    pending = (indices, labels, host, ready)
                bar.update(len(indices) + len(bad))
            if pending is not None:
                self.store(*pending)
        if self.open:  # STYLE 8: every row of every assigned shard must have been filled
            raise RuntimeError(f"shards {sorted(self.open)} were left with unfilled rows; this is a bug")
        return clock

    def record_bad(self, row: int, message: str) -> None:
        if not self.skip_bad_images:
            raise DatasetError(message)
        shard = self.buffer(row)
        shard.mark_bad(row, message)
        self.commit_if_done(shard)

    def store(self, indices: torch.Tensor, labels: torch.Tensor, host: dict[str, torch.Tensor], ready) -> None:
        if ready is not None:
            ready.synchronize()  # the copy of an earlier batch: the GPU is already busy with the next one
        rows = indices.numpy()
        expected = np.asarray(self.dataset.labels)[rows]
        if not np.array_equal(expected, labels.numpy()):
            row = int(rows[np.flatnonzero(expected != labels.numpy())[0]])
            raise DatasetError(f"dataset '{self.dataset.name}' .labels[{row}] disagrees with ds[{row}]; its label source is inconsistent")
        outputs = {p: host[p].numpy() for p in self.pools}
        for pool, array in outputs.items():
            if not np.isfinite(array).all():
                row = int(rows[np.flatnonzero(~np.isfinite(array).reshape(len(rows), -1).all(axis=1))[0]])
                raise CacheError(
                    f"'{pool}' features of image {row} are NaN or beyond float16 range (|x| > 65504); "
                    "the checkpoint or --arch is probably wrong (check with `ijepa-eval inspect`)"
                )
        for shard_index in np.unique(rows // self.shard_rows):
            shard = self.buffer(int(shard_index) * self.shard_rows)
            sel = (rows >= shard.start) & (rows < shard.stop)
            shard.put(rows[sel], {p: a[sel] for p, a in outputs.items()})
            self.commit_if_done(shard)

    def buffer(self, row: int) -> ShardBuffer:
        index = row // self.shard_rows
        if index not in self.open:
            start, stop = self.ranges[index]
            rows = self.encoder.num_patches if self.tokens else self.n_last_blocks
            shape = (rows, int(self.encoder.embed_dim))
            self.open[index] = ShardBuffer(index, start, stop, shape, self.pools)
        return self.open[index]

    def commit_if_done(self, shard: ShardBuffer) -> None:
        if shard.done:
            del self.open[shard.index]
            self.writes.append(
                self.writer.submit(self.entry.write_shard, shard.index, shard.start, shard.stop, shard.arrays, shard.bad)
            )


def extract_shards(encoder: Any, dataset: Any, entry: CacheEntry, ranges: list[tuple[int, int]], shards: list[int],
                   *, transform: Callable | None, batch_size: int, num_workers: int, device: torch.device,
                   n_last_blocks: int, progress: bool, skip_bad_images: bool, decode: str = "pil",
                   tokens: bool = False) -> LoaderClock | None:
    """Extract ``shards``; ``transform`` None = the dataset's own. Returns the loop's LoaderClock (None when
    there was nothing to do)."""
    entry.path.mkdir(parents=True, exist_ok=True)
    if not shards:
        return None
    fit_threads(num_workers)  # intra-op threads + loader workers within the free cores
    on_device = transform is not None and decode == "gpu"  # decode and resize there, not in the workers
    indices = [i for s in shards for i in range(*ranges[s])]
    items = IndexedImages(dataset, indices, None if on_device else transform, decode if transform is not None else None)
    loader = DataLoader(items, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=collate_indexed, pin_memory=device.type == "cuda", persistent_workers=False)
    bar = tqdm(total=len(indices), unit="img", disable=not progress, dynamic_ncols=True,
               desc=f"features {dataset.name}/{dataset.split}")
    # the encoder goes back where it came from afterwards: its weights must not hold GPU memory the probes need
    with lent_encoder(encoder, device), bar, ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-writer") as writer:
        job = Extraction(encoder, dataset, entry, ranges=ranges, n_last_blocks=n_last_blocks, device=device,
                         skip_bad_images=skip_bad_images, tokens=tokens)
        try:
            return job.run(loader, bar, writer, transform if on_device else None)
        finally:
            for future in job.writes:  # completed shards are committed even when the loop failed
                future.result()


def commit(entry: CacheEntry, ranges: list[tuple[int, int]], pools: list[str], dataset: Any, meta: dict[str, Any],
           *, extraction_s: float, extracted_rows: int, clock: LoaderClock | None = None) -> None:
    """Rank 0, after every rank has written its shards: labels, then meta.json with complete=True (with rank
    0's loop rates when ``clock`` is given)."""
    records = []
    for index, (start, stop) in enumerate(ranges):
        record = entry.valid_record(index, start, stop, pools, check_hash=False)
        if record is None:
            raise CacheError(f"shard {index} of {entry.path} was not written; a rank failed, run the extraction again")
        records.append(record)
    labels = entry.write_labels(np.asarray(dataset.labels, dtype=np.int64))
    bad = sorted((row, message) for record in records for row, message in record["bad"])
    meta.update(
        labels=labels,
        shards=[{"index": r["index"], "start": r["start"], "stop": r["stop"], "files": r["files"]} for r in records],
        bad_indices=[row for row, _ in bad],
        bad=[{"index": row, "error": message} for row, message in bad],
        timings={"extraction_s": round(extraction_s, 3), "extracted_rows": extracted_rows,
                 "images_per_s": round(extracted_rows / extraction_s, 2) if extraction_s > 0 else None,
                 **(clock.summary() if clock is not None else {})},
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    entry.seal_meta(meta)
