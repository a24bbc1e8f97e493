"""Frozen-feature extraction into the shared cache: one pass per (checkpoint, dataset split, transform, ...).

Rows are extracted BY DATASET INDEX into fixed-size shards (``shard_rows`` indices each) and a shard is
committed only when every one of its rows was filled, so a killed run resumes shard by shard. Under
torchrun (or any initialised process group) shard ``s`` belongs to rank ``s % world_size``; rank 0 plans,
waits at a barrier and commits meta.json. This module is the sequence; each step has its own module:
``planning`` (the cache key, the entry, the missing shards), ``shard_writer`` (loading by index, the
extraction loop, committing shards) and ``distributed`` (collectives, loader workers; each process's device is ``ijepa_eval.devices``'s).

Transform: a dataset whose ``transform`` is None gets the paper's eval preprocessing,
``ijepa_eval.data.eval_transform(dataset.name, encoder.img_size, normalize=False)``, through the decode
backend asked for (or the uint8 ``transform`` the caller gives: attentive probes' V-JEPA eval transform);
loaders ship uint8 and the device normalises (``features.encoding``). A dataset
that already has a transform is used as is. Either way the transform's text and the backend are in the key.
A loop of 10 s or more that waits for its loader over a fifth of the time prints a loader-bound warning.

Storage is float16 (half the bytes of float32; probes see float32). Features that are NaN or beyond the
float16 range (|x| > 65504, far above what a final LayerNorm produces) raise a CacheError instead of
being stored as inf: that points to a broken checkpoint, not to a storage problem.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ijepa_eval.devices import process_device
from ijepa_eval.errors import CacheError, ConfigError, DatasetError
from ijepa_eval.features.cache import LABELS, STORAGE_DTYPE, CacheEntry, shard_ranges
from ijepa_eval.features.distributed import barrier, broadcast, default_workers
from ijepa_eval.features.featureset import FeatureSet
from ijepa_eval.features.planning import (
    base_meta,
    cache_entry_for,
    check_dataset,
    default_transform,
    plan_missing,
    pools_of,
)
from ijepa_eval.features.shard_writer import commit, extract_shards

DEFAULT_SHARD_ROWS = 4096  # ~40 MB per shard for ViT-H concatPOOL4: resume granularity of a few seconds


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
    decode: str | None = None,
    tokens: bool = False,
    transform: Callable | None = None,
) -> FeatureSet:
    """Features of ``dataset`` under ``encoder``, from the cache or extracted into it (then cached).

    A cache hit never calls the encoder. ``cache_dir`` None = ``$IJEPA_EVAL_CACHE`` or
    ``~/.cache/ijepa-eval``. ``num_workers`` None = one loader worker per core of this rank's share
    (``ijepa_eval.threads.loader_workers``). ``decode`` (``pil`` | ``tensor`` | ``gpu``, None = the
    dataset's, ``pil`` by default) picks the decode backend; it is part of the cache key, so one backend's
    features are never served for another. ``skip_bad_images`` drops undecodable images (indices and
    messages in ``meta["bad"]``) instead of failing. The encoder is lent to ``device`` (CUDA when available)
    while it extracts, then moved back. Under torchrun every rank must call this with the same arguments;
    each extracts its share on its own GPU and all return the same FeatureSet.
    ``tokens`` stores the last block's patch tokens instead of pooled blocks (``FeatureSet.tokens()``;
    ``n_last_blocks`` is then 1): ``tokens_bytes`` says how much disk that takes. ``transform`` (a uint8
    transform, for a dataset without its own) replaces the paper's eval transform; its text is in the key.
    """
    n_last_blocks = 1 if tokens else n_last_blocks
    if not 1 <= n_last_blocks <= encoder.depth:
        raise ConfigError(f"n_last_blocks (--n-last-blocks) must be in [1, {encoder.depth}] for this "
                          f"{encoder.depth}-block encoder, got {n_last_blocks}")
    if batch_size < 1 or shard_rows < 1:
        raise ConfigError(f"batch_size and shard_rows must be positive, got {batch_size} and {shard_rows}")
    if num_workers is not None and num_workers < 0:
        raise ConfigError(f"num_workers (--workers) must be 0 or more, got {num_workers}")
    check_dataset(dataset)
    rank, world_size, device = process_device(device)  # under torchrun: cuda:LOCAL_RANK, process group joined
    entry, fields = cache_entry_for(encoder, dataset, cache_dir=cache_dir, n_last_blocks=n_last_blocks,
                                    device=device, decode=decode, tokens=tokens, transform=transform)
    transform = default_transform(encoder, dataset, transform)
    pools = pools_of(encoder, tokens)

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
                clock = extract_shards(
                    encoder, dataset, entry, ranges, mine, transform=transform, batch_size=batch_size,
                    num_workers=default_workers(world_size) if num_workers is None else num_workers, device=device,
                    n_last_blocks=n_last_blocks, progress=progress and rank == 0, skip_bad_images=skip_bad_images,
                    decode=fields["decode"], tokens=tokens)
                if rank == 0 and clock is not None and clock.warning(fields["decode"]):
                    print(f"warning: {clock.warning(fields['decode'])}", file=sys.stderr)
                barrier(device)
                extraction_s = time.perf_counter() - started
                if rank == 0:
                    commit(entry, ranges, pools, dataset,
                           base_meta(entry, fields, encoder, dataset, shard_rows, complete=True),
                           extraction_s=extraction_s, extracted_rows=sum(ranges[s][1] - ranges[s][0] for s in missing),
                           clock=clock)
                barrier(device)
        except BaseException:
            if rank == 0:
                entry.discard_if_unused()  # a run that failed before its first shard leaves no trace
            raise
    return load_featureset(entry, skip_bad_images=skip_bad_images, cache_hit=hit, extraction_s=extraction_s)


def tokens_bytes(encoder: Any, n_images: int) -> int:
    """Disk (and memory) that ``get_features(..., tokens=True)`` needs for ``n_images`` images (float16)."""
    return n_images * encoder.num_patches * encoder.embed_dim * np.dtype(STORAGE_DTYPE).itemsize


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
