"""The on-disk feature cache: one folder per key, fixed-size float16 row shards, a commit record per shard.

Layout of ``<cache_dir>/<key>/``::

    meta.json           key fields, checkpoint/dataset info, shard plan; ``complete`` turns true last
    avg-00000.npy ...   float16 [rows, n_last_blocks, D] per shard of ``shard_rows`` dataset indices
    cls-00000.npy ...   the same for the class token (models that have one)
    shard-00000.json    the shard's commit record: row range, file sizes + sha256, unreadable rows
    labels.npy          int64 [N] (written when the cache completes; size + sha256 in meta.json)
    lock                fcntl lock: one process extracts an entry, a second one waits, then reuses it

A shard counts only when its record exists and every file it lists has that size and hash, so a killed run
resumes from the completed shards and a truncated or bit-flipped file is found and rebuilt. Every file is
written atomically (temp + rename), the record after its arrays, meta.json's ``complete`` flag after all.
Hashes are checked on every open (reading the shards once, ~10 s of hashing for ImageNet-train ViT-H
concatPOOL4, spread over several threads): silently wrong features cost far more than that. A complete
meta.json carries the sha256 of its own content (``integrity``) and of labels.npy, and must list exactly
the shards' commit records, so an edited label, row count, dropped-row list or shard list is found too:
such an entry is re-committed from its (verified) shards, never served.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ijepa_eval.errors import CacheError, unknown_choice
from ijepa_eval.io import atomic_open, atomic_write_json, sha256_file
from ijepa_eval.paths import safe_component

# Bump whenever extraction or layout changes the stored numbers: it is part of every key, so old entries
# are never reused by new code (they stay listed by `ijepa-eval cache ls` until removed).
FEATURE_CODE_VERSION = 1
CACHE_ENV = "IJEPA_EVAL_CACHE"
STORAGE_DTYPE = np.float16
MAX_TOKENS_GB = 64.0  # default ceiling for a run's cached patch tokens (attentive probes, --max-cache-gb)
META = "meta.json"
LABELS = "labels.npy"
LOCK = "lock"
INTEGRITY = "integrity"  # meta.json's sha256 of its own other fields


def default_cache_dir() -> Path:
    """``$IJEPA_EVAL_CACHE`` if set, else ``~/.cache/ijepa-eval``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ijepa-eval"


def resolve_cache_dir(cache_dir: str | os.PathLike | None) -> Path:
    return Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()


def make_key(fields: Mapping[str, Any]) -> str:
    """Readable prefix (dataset-split) + 16 hex digits of the canonical JSON of every key field."""
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]
    slug = safe_component(f"{fields['dataset']}-{fields['split']}", max_len=80)
    return f"{slug}-{digest}"


def meta_digest(meta: Mapping[str, Any]) -> str:
    body = {k: v for k, v in meta.items() if k != INTEGRITY}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def shard_ranges(n: int, shard_rows: int) -> list[tuple[int, int]]:
    return [(start, min(start + shard_rows, n)) for start in range(0, n, shard_rows)]


class CacheEntry:
    """One cache folder: shard files, their commit records and meta.json."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    @property
    def key(self) -> str:
        return self.path.name

    def array_path(self, pool: str, index: int) -> Path:
        return self.path / f"{pool}-{index:05d}.npy"

    def record_path(self, index: int) -> Path:
        return self.path / f"shard-{index:05d}.json"

    # meta.json ---------------------------------------------------------------------------------------------
    def read_meta(self) -> dict[str, Any] | None:
        """The parsed meta.json, or None when it is missing or unreadable (treated as not cached)."""
        try:
            return json.loads((self.path / META).read_text())
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            return None

    def write_meta(self, meta: Mapping[str, Any]) -> None:
        atomic_write_json(self.path / META, meta)

    def is_complete(self) -> bool:
        meta = self.read_meta()
        return bool(meta and meta.get("complete"))

    def seal_meta(self, meta: dict[str, Any]) -> None:
        """Write a complete entry's meta.json with the hash of its own content (checked by verified_meta)."""
        meta[INTEGRITY] = meta_digest(meta)
        self.write_meta(meta)

    def write_labels(self, labels: np.ndarray) -> dict[str, Any]:
        path = self.path / LABELS
        with atomic_open(path, "wb") as f:
            np.save(f, np.asarray(labels, dtype=np.int64), allow_pickle=False)
        return {"name": LABELS, "bytes": path.stat().st_size, "sha256": sha256_file(path)}

    def verified_meta(self, pools: list[str]) -> tuple[dict[str, Any] | None, str]:
        """(meta, "") for a complete entry whose every file matches its record, else (None, why not).

        Shard array hashes are checked by ``valid_record`` (the caller hashes them once, in threads); here
        the rest: meta.json's own hash, labels.npy's size/hash/length, and the shard list against the records.
        """
        meta = self.read_meta()
        if not meta or not meta.get("complete"):
            return None, "it is incomplete"
        if meta.get(INTEGRITY) != meta_digest(meta):
            return None, f"{META} was modified after it was written"
        try:
            n, labels_info, shards = int(meta["n"]), meta["labels"], meta["shards"]
            expected_ranges = shard_ranges(n, int(meta["shard_rows"]))
            if [(sh["start"], sh["stop"]) for sh in shards] != expected_ranges:
                return None, "its shard list does not cover its rows"
            for index, sh in enumerate(shards):
                record = self.valid_record(index, sh["start"], sh["stop"], pools, check_hash=False)
                if record is None or record["files"] != sh["files"]:
                    return None, f"shard {index} does not match its commit record"
            path = self.path / LABELS
            if not path.is_file() or path.stat().st_size != labels_info["bytes"] or sha256_file(path) != labels_info["sha256"]:
                return None, f"{LABELS} does not match its hash"
            if not all(0 <= int(i) < n for i in meta["bad_indices"]):
                return None, "its list of unreadable rows is out of range"
        except (KeyError, TypeError, ValueError) as err:
            return None, f"{META} lacks a field ({err})"
        return meta, ""

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive lock on the entry: a second process extracting the same features waits, then reuses them."""
        self.path.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    print(f"waiting for another process extracting into {self.path} ...", flush=True)
                    fcntl.flock(fd, fcntl.LOCK_EX)
                # the holder may have removed an unused entry meanwhile: lock the file that is there now
                with contextlib.suppress(FileNotFoundError):
                    if os.fstat(fd).st_ino == os.stat(self.path / LOCK).st_ino:
                        break
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)
            self.path.mkdir(parents=True, exist_ok=True)
        try:
            yield
        finally:
            os.close(fd)  # closing releases the flock

    def discard_if_unused(self) -> None:
        """After a failed run: remove the entry when no shard was committed (nothing worth resuming)."""
        if self.path.is_dir() and not any(self.path.glob("shard-*.json")):
            shutil.rmtree(self.path, ignore_errors=True)

    # shards ------------------------------------------------------------------------------------------------
    def write_shard(
        self, index: int, start: int, stop: int, arrays: Mapping[str, np.ndarray], bad: list[list[Any]]
    ) -> dict[str, Any]:
        """Write the shard's arrays, then its record (the commit point); returns the record."""
        files = {}
        for pool, array in arrays.items():
            path = self.array_path(pool, index)
            with atomic_open(path, "wb") as f:
                np.save(f, array, allow_pickle=False)
            files[pool] = {"name": path.name, "bytes": path.stat().st_size, "sha256": sha256_file(path)}
        record = {"index": index, "start": start, "stop": stop, "files": files, "bad": bad}
        atomic_write_json(self.record_path(index), record)
        return record

    def valid_record(
        self, index: int, start: int, stop: int, pools: list[str], *, check_hash: bool = True
    ) -> dict[str, Any] | None:
        """The shard's record if it covers [start, stop) for these pools and every file is intact."""
        try:
            record = json.loads(self.record_path(index).read_text())
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            return None
        if (record.get("start"), record.get("stop")) != (start, stop) or sorted(record.get("files", {})) != sorted(pools):
            return None
        for info in record["files"].values():
            path = self.path / info["name"]
            if not path.is_file() or path.stat().st_size != info["bytes"]:
                return None
            if check_hash and sha256_file(path) != info["sha256"]:
                return None
        return record

    def remove_shard(self, index: int, pools: list[str]) -> None:
        """Drop a stale or damaged shard: record first, so a crash in between never leaves a valid record."""
        self.record_path(index).unlink(missing_ok=True)
        for pool in pools:
            self.array_path(pool, index).unlink(missing_ok=True)

    def open_arrays(self, pool: str, records: list[Mapping[str, Any]]) -> list[np.ndarray]:
        """Memory-mapped float16 shards of one pool, in row order."""
        arrays = []
        for record in records:
            path = self.path / record["files"][pool]["name"]
            try:
                arrays.append(np.load(path, mmap_mode="r", allow_pickle=False))
            except (OSError, ValueError) as err:
                raise CacheError(
                    f"cache shard {path} is unreadable ({err}); run `ijepa-eval cache rm {self.key}` and extract again"
                ) from None
        return arrays

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.iterdir() if p.is_file())


def iter_entries(cache_dir: str | os.PathLike | None) -> Iterator[CacheEntry]:
    """Every cache folder (one holding a meta.json) under the cache dir, sorted by key."""
    root = resolve_cache_dir(cache_dir)
    if not root.is_dir():
        return
    for path in sorted(root.iterdir()):
        if (path / META).is_file():
            yield CacheEntry(path)


def remove_entries(cache_dir: str | os.PathLike | None, keys: list[str] | None) -> list[str]:
    """Delete the named entries (all when ``keys`` is None); only folders with a meta.json are touched."""
    entries = {e.key: e for e in iter_entries(cache_dir)}
    if keys is None:
        keys = list(entries)
    for key in keys:
        if key not in entries:
            raise CacheError(unknown_choice("cache entry", key, entries) if entries else
                             f"no cache entry '{key}': {resolve_cache_dir(cache_dir)} holds no cached features")
    for key in keys:
        shutil.rmtree(entries[key].path)
    return keys
