"""Extraction planning: what identifies an extraction (its cache key), which cache entry holds it, and which
of its shards are still missing. Nothing here touches the encoder's weights beyond hashing them.

The key (STYLE 8) holds everything that changes the stored numbers: the checkpoint's content hash, branch,
arch, input size, dataset fingerprint and split, the transform's text, the blocks and pools kept, and the
precision. A dataset whose ``transform`` is None yields PIL images and gets the paper's eval transform.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from ijepa_eval.errors import DatasetError
from ijepa_eval.features.cache import (
    FEATURE_CODE_VERSION,
    STORAGE_DTYPE,
    CacheEntry,
    make_key,
    resolve_cache_dir,
)

HASH_THREADS = 8  # shards checked at once when a cache entry is opened


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
