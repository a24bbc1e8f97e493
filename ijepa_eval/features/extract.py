"""Frozen-feature extraction into the shared cache: one pass per (checkpoint, dataset split, transform, ...).

Rows are extracted BY DATASET INDEX into fixed-size shards (``shard_rows`` indices each) and a shard is
committed only when every one of its rows was filled, so a killed run resumes shard by shard. Under
torchrun (or any initialised process group) shard ``s`` belongs to rank ``s % world_size``; rank 0 plans,
waits at a barrier and commits meta.json.

Transform: a dataset whose ``transform`` is None yields PIL images, and gets
``ijepa_eval.data.eval_transform(dataset.name, encoder.img_size)`` (the paper's eval preprocessing);
a dataset that already has a transform is used as is. Either way the transform's repr is in the key.

Storage is float16 (half the bytes of float32; probes see float32). Features that are NaN or beyond the
float16 range (|x| > 65504, far above what a final LayerNorm produces) raise a CacheError instead of
being stored as inf: that points to a broken checkpoint, not to a storage problem.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ijepa_eval.errors import CacheError, ConfigError, DatasetError
from ijepa_eval.features.cache import (
    FEATURE_CODE_VERSION,
    LABELS,
    STORAGE_DTYPE,
    CacheEntry,
    make_key,
    resolve_cache_dir,
    shard_ranges,
)
from ijepa_eval.features.featureset import FeatureSet
from ijepa_eval.threads import fit_threads, loader_workers

DEFAULT_SHARD_ROWS = 4096  # ~40 MB per shard for ViT-H concatPOOL4: resume granularity of a few seconds
HASH_THREADS = 8  # shards checked at once when a cache entry is opened


# ---------------------------------------------------------------------------------------------------------
# what identifies an extraction


def describe_transform(transform: Callable | None) -> str:
    """A stable text for the key: repr without memory addresses (lambdas print one per process)."""
    return re.sub(r" at 0x[0-9a-fA-F]+", "", re.sub(r"\s+", " ", repr(transform))).strip()


def key_fields(encoder: Any, dataset: Any, transform: str, n_last_blocks: int, precision: str) -> dict[str, Any]:
    """Everything that changes the stored numbers (STYLE 8); its hash names the cache folder."""
    from ijepa_eval.encoders import state_dict_sha256

    info = getattr(encoder, "info", None) or {}
    return {
        "feature_code_version": FEATURE_CODE_VERSION,
        # the checkpoint file's hash; an Encoder built without one is keyed on its weights
        "checkpoint_sha256": info.get("sha256") or state_dict_sha256(encoder.vit.state_dict()),
        "branch": info.get("branch"),
        "arch": info.get("arch"),
        "img_size": int(encoder.img_size),
        "dataset": dataset.name,
        "split": dataset.split,
        "fingerprint": dataset.fingerprint(),
        "transform": transform,
        "n_last_blocks": int(n_last_blocks),
        "pools": pools_of(encoder),
        "precision": precision,
    }


def default_transform(encoder: Any, dataset: Any) -> Callable | None:
    """The paper's eval transform for a dataset without one (it yields PIL images); None = use the dataset's."""
    if getattr(dataset, "transform", None) is not None:
        return None
    from ijepa_eval.data import eval_transform

    return eval_transform(dataset.name, encoder.img_size)


def cache_entry_for(encoder: Any, dataset: Any, *, cache_dir: str | os.PathLike | None = None, n_last_blocks: int = 4,
                    device: str | torch.device = "cpu") -> tuple[CacheEntry, dict[str, Any]]:
    """Where get_features keeps (or will keep) these features, and the key fields naming it."""
    transform = default_transform(encoder, dataset) or dataset.transform
    precision = "bf16-autocast" if torch.device(device).type == "cuda" else "fp32"
    fields = key_fields(encoder, dataset, describe_transform(transform), n_last_blocks, precision)
    return CacheEntry(resolve_cache_dir(cache_dir) / make_key(fields)), fields


def pools_of(encoder: Any) -> list[str]:
    return ["avg", "cls"] if encoder.has_class_token else ["avg"]


def check_dataset(dataset: Any) -> None:
    """Fail before anything is written: an empty split or labels outside [0, num_classes)."""
    where = f"dataset '{dataset.name}' split '{dataset.split}'"
    if len(dataset) == 0:
        raise DatasetError(f"{where} is empty; check --root and --split")
    labels = np.asarray(dataset.labels)
    if len(labels) != len(dataset):
        raise DatasetError(f"{where} has {len(labels)} labels for {len(dataset)} images; its label file is inconsistent")
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= dataset.num_classes:
        raise DatasetError(
            f"{where} has labels in [{lo}, {hi}] outside [0, {dataset.num_classes - 1}]; fix its label files"
        )


# ---------------------------------------------------------------------------------------------------------
# devices and processes


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


# ---------------------------------------------------------------------------------------------------------
# loading by index


class IndexedImages(Dataset):
    """``(index, image or None, label, error or None)`` for the given dataset indices.

    Unreadable images come back as data, not exceptions, so an error raised in a loader worker still
    reaches the user as one line naming the file (and ``skip_bad_images`` can record the row).
    """

    def __init__(self, dataset: Any, indices: list[int], transform: Callable | None) -> None:
        self.dataset, self.indices, self.transform = dataset, indices, transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> tuple[int, Any, int, str | None]:
        index = self.indices[k]
        try:
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
    images = torch.stack([it[1] for it in good]) if good else None
    labels = torch.tensor([it[2] for it in good], dtype=torch.long)
    return indices, images, labels, bad


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


# ---------------------------------------------------------------------------------------------------------
# the extraction loop


class Extraction:
    """Extracts the given shards of one dataset and commits each to ``entry`` as soon as it is full."""

    def __init__(self, encoder: Any, dataset: Any, entry: CacheEntry, *, ranges: list[tuple[int, int]],
                 n_last_blocks: int, device: torch.device, skip_bad_images: bool) -> None:
        self.encoder, self.dataset, self.entry, self.ranges = encoder, dataset, entry, ranges
        self.n_last_blocks, self.device, self.skip_bad_images = n_last_blocks, device, skip_bad_images
        self.pools = pools_of(encoder)
        self.shard_rows = ranges[0][1] - ranges[0][0]
        self.open: dict[int, ShardBuffer] = {}
        self.writes: list[Future] = []

    def run(self, loader: DataLoader, bar: tqdm, writer: ThreadPoolExecutor) -> None:
        self.writer = writer
        cuda = self.device.type == "cuda"
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()
        pending = None  # on CUDA, batch t's device->host copy is consumed after batch t+1 is queued
        with torch.inference_mode(), autocast:
            for indices, images, labels, bad in loader:
                for row, message in bad:
                    self.record_bad(row, message)
                if images is not None:
                    images = images.to(self.device, non_blocking=True)
                    if cuda:
                        images = images.contiguous(memory_format=torch.channels_last)
                    pooled = self.encoder.forward_pooled(images, n_last_blocks=self.n_last_blocks)
                    host = {p: pooled[p].to(torch.float16).to("cpu", non_blocking=cuda) for p in self.pools}
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
            shape = (self.n_last_blocks, int(self.encoder.embed_dim))
            self.open[index] = ShardBuffer(index, start, stop, shape, self.pools)
        return self.open[index]

    def commit_if_done(self, shard: ShardBuffer) -> None:
        if shard.done:
            del self.open[shard.index]
            self.writes.append(
                self.writer.submit(self.entry.write_shard, shard.index, shard.start, shard.stop, shard.arrays, shard.bad)
            )


# ---------------------------------------------------------------------------------------------------------
# public entry point


def get_features(
    encoder: Any,
    dataset: Any,
    *,
    cache_dir: str | os.PathLike | None = None,
    batch_size: int = 64,
    num_workers: int | None = None,
    device: str | torch.device | None = None,
    n_last_blocks: int = 4,
    progress: bool = True,
    skip_bad_images: bool = False,
    shard_rows: int = DEFAULT_SHARD_ROWS,
) -> FeatureSet:
    """Features of ``dataset`` under ``encoder``, from the cache or extracted into it (then cached).

    A cache hit never calls the encoder. ``cache_dir`` None = ``$IJEPA_EVAL_CACHE`` or
    ``~/.cache/ijepa-eval``. ``num_workers`` None = one loader worker per spare core (at most 12).
    ``skip_bad_images`` drops undecodable images (indices and messages in ``meta["bad"]``) instead of
    failing. The encoder is moved to ``device`` (CUDA when available). Under torchrun every rank must call
    this with the same arguments; each extracts its share and all return the same FeatureSet.
    """
    if not 1 <= n_last_blocks <= encoder.depth:
        raise ConfigError(f"n_last_blocks (--n-last-blocks) must be in [1, {encoder.depth}] for this "
                          f"{encoder.depth}-block encoder, got {n_last_blocks}")
    if batch_size < 1 or shard_rows < 1:
        raise ConfigError(f"batch_size and shard_rows must be positive, got {batch_size} and {shard_rows}")
    if num_workers is not None and num_workers < 0:
        raise ConfigError(f"num_workers (--workers) must be 0 or more, got {num_workers}")
    check_dataset(dataset)
    rank, world_size = dist_context()
    device = resolve_device(device, world_size)
    if device.type == "cuda":
        torch.cuda.set_device(device)  # collectives (broadcast_object_list) use the current device
    transform = default_transform(encoder, dataset)
    entry, fields = cache_entry_for(encoder, dataset, cache_dir=cache_dir, n_last_blocks=n_last_blocks,
                                    device=device)
    pools = pools_of(encoder)

    # Rank 0 holds the entry's lock from planning to commit: a second process asking for the same features
    # waits, then finds them complete (a cache hit) instead of extracting them again beside us.
    with entry.lock() if rank == 0 else contextlib.nullcontext():
        try:
            plan = None
            if rank == 0:
                # shard_rows does not change the numbers (it is not in the key): an entry keeps the shard size
                # it was started with, so another value neither discards a complete cache nor a partial one.
                shard_rows = (entry.read_meta() or {}).get("shard_rows") or shard_rows
                missing = plan_missing(entry, shard_ranges(len(dataset), shard_rows), pools)
                plan = (shard_rows, missing, not missing and entry.verified_meta(pools)[0] is not None)
                if not plan[2]:
                    entry.write_meta(base_meta(entry, fields, encoder, dataset, shard_rows, complete=False))
            shard_rows, missing, hit = broadcast(plan)
            ranges = shard_ranges(len(dataset), shard_rows)
            extraction_s = 0.0
            if not hit:
                started = time.perf_counter()
                mine = [s for s in missing if s % world_size == rank]
                extract_shards(encoder, dataset, entry, ranges, mine, transform=transform, batch_size=batch_size,
                               num_workers=default_workers(world_size) if num_workers is None else num_workers,
                               device=device, n_last_blocks=n_last_blocks, progress=progress and rank == 0,
                               skip_bad_images=skip_bad_images)
                barrier(device)
                extraction_s = time.perf_counter() - started
                if rank == 0:
                    commit(entry, ranges, pools, dataset,
                           base_meta(entry, fields, encoder, dataset, shard_rows, complete=True),
                           extraction_s=extraction_s, extracted_rows=sum(ranges[s][1] - ranges[s][0] for s in missing))
                barrier(device)
        except BaseException:
            if rank == 0:
                entry.discard_if_unused()  # a run that failed before its first shard leaves no trace
            raise
    return load_featureset(entry, skip_bad_images=skip_bad_images, cache_hit=hit, extraction_s=extraction_s)


def plan_missing(entry: CacheEntry, ranges: list[tuple[int, int]], pools: list[str]) -> list[int]:
    """Shards to (re)extract: those without an intact commit record (damaged ones are deleted first)."""
    if not entry.path.is_dir():
        return list(range(len(ranges)))
    # Hashing every shard is what a cache hit costs (GBs for ImageNet); hashlib and file reads release the
    # GIL, so threads check several shards at once.
    with ThreadPoolExecutor(max_workers=min(HASH_THREADS, len(ranges)), thread_name_prefix="shard-check") as pool:
        records = list(pool.map(lambda i: entry.valid_record(i, *ranges[i], pools), range(len(ranges))))
    missing = [index for index, record in enumerate(records) if record is None]
    for index in missing:
        entry.remove_shard(index, pools)
    return missing


def base_meta(entry: CacheEntry, fields: dict[str, Any], encoder: Any, dataset: Any, shard_rows: int,
              *, complete: bool) -> dict[str, Any]:
    info = getattr(encoder, "info", None) or {}
    return {
        "complete": complete,
        "cache_key": entry.key,
        "key_fields": fields,
        "checkpoint": {k: info.get(k) for k in ("source", "sha256", "format", "branch")},
        "dataset": {"name": dataset.name, "split": dataset.split, "root": str(getattr(dataset, "root", None))},
        "fingerprint": fields["fingerprint"],
        "n": len(dataset),
        "num_classes": int(dataset.num_classes),
        "embed_dim": int(encoder.embed_dim),
        "n_last_blocks": fields["n_last_blocks"],
        "pools": fields["pools"],
        "dtype": np.dtype(STORAGE_DTYPE).name,
        "shard_rows": shard_rows,
    }


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


def extract_shards(encoder: Any, dataset: Any, entry: CacheEntry, ranges: list[tuple[int, int]], shards: list[int],
                   *, transform: Callable | None, batch_size: int, num_workers: int, device: torch.device,
                   n_last_blocks: int, progress: bool, skip_bad_images: bool) -> None:
    entry.path.mkdir(parents=True, exist_ok=True)
    if not shards:
        return
    encoder.to(device)
    fit_threads(num_workers)  # intra-op threads + loader workers within the free cores
    if device.type == "cuda":
        encoder.to(memory_format=torch.channels_last)  # the patch-embedding conv runs faster in NHWC
    indices = [i for s in shards for i in range(*ranges[s])]
    loader = DataLoader(IndexedImages(dataset, indices, transform), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers, collate_fn=collate_indexed, pin_memory=device.type == "cuda",
                        persistent_workers=False)
    job = Extraction(encoder, dataset, entry, ranges=ranges, n_last_blocks=n_last_blocks, device=device,
                     skip_bad_images=skip_bad_images)
    bar = tqdm(total=len(indices), unit="img", disable=not progress, dynamic_ncols=True,
               desc=f"features {dataset.name}/{dataset.split}")
    with bar, ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-writer") as writer:
        try:
            job.run(loader, bar, writer)
        finally:
            for future in job.writes:  # completed shards are committed even when the loop failed
                future.result()


def commit(entry: CacheEntry, ranges: list[tuple[int, int]], pools: list[str], dataset: Any, meta: dict[str, Any],
           *, extraction_s: float, extracted_rows: int) -> None:
    """Rank 0, after every rank has written its shards: labels, then meta.json with complete=True."""
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
                 "images_per_s": round(extracted_rows / extraction_s, 2) if extraction_s > 0 else None},
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    entry.seal_meta(meta)


def load_featureset(entry: CacheEntry, *, skip_bad_images: bool, cache_hit: bool, extraction_s: float) -> FeatureSet:
    meta, problem = entry.verified_meta((entry.read_meta() or {}).get("pools") or [])
    if meta is None:  # get_features re-commits a damaged entry under its lock; this is a change since then
        raise CacheError(f"cache entry {entry.path} cannot be used: {problem}; run the extraction again")
    if meta["bad"] and not skip_bad_images:
        first = meta["bad"][0]
        raise DatasetError(f"{len(meta['bad'])} image(s) are unreadable, first: {first['error']}; "
                           "fix them or pass --skip-bad-images")
    labels = np.load(entry.path / LABELS, allow_pickle=False)
    keep = None
    if meta["bad_indices"]:
        keep = np.ones(meta["n"], dtype=bool)
        keep[meta["bad_indices"]] = False
    indices = np.arange(meta["n"]) if keep is None else np.flatnonzero(keep)
    shards = {pool: entry.open_arrays(pool, meta["shards"]) for pool in meta["pools"]}
    meta = {**meta, "extraction_s": extraction_s, "cache_hit": cache_hit}
    return FeatureSet(labels=labels[indices], indices=indices, num_classes=meta["num_classes"], meta=meta,
                      n_last_blocks=meta["n_last_blocks"], pools=meta["pools"], shards=shards, keep=keep)
