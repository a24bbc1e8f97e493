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

from ijepa_eval.errors import ConfigError, DatasetError
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


def key_fields(encoder: Any, dataset: Any, transform: str, n_last_blocks: int, precision: str,
               decode: str = "pil", tokens: bool = False) -> dict[str, Any]:
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
        "decode": decode,  # pil | tensor | gpu: the backends' pixels differ (README, Decoding)
        "n_last_blocks": int(n_last_blocks),
        "pools": pools_of(encoder, tokens),
        "precision": precision,
    }


def default_transform(encoder: Any, dataset: Any, transform: Callable | None = None) -> Callable | None:
    """The transform extraction runs for a dataset without one (it yields images), ending at uint8 (the device
    normalises): ``transform`` when given (the attentive probes' V-JEPA eval transform), else the paper's
    eval transform. None = use the dataset's own."""
    if getattr(dataset, "transform", None) is not None:
        if transform is not None:
            raise ConfigError(f"dataset '{dataset.name}' brings its own transform; build it without one to extract "
                              "with another")
        return None
    if transform is not None:
        return transform
    from ijepa_eval.data import eval_transform

    return eval_transform(dataset.name, encoder.img_size, normalize=False)


def resolve_decode(dataset: Any, decode: str | None) -> str:
    """The backend an extraction decodes with: ``decode``, else the dataset's own (``pil`` for datasets that
    have none). A dataset with its own transform decodes as it was built; another backend is an error."""
    from ijepa_eval.data.decode import DEFAULT_DECODE, check_decode

    own = getattr(dataset, "decode", DEFAULT_DECODE)
    decode = own if decode is None else check_decode(decode)
    if getattr(dataset, "transform", None) is not None and decode != own:
        raise ConfigError(f"dataset '{dataset.name}' brings its own transform and decodes with '{own}'; build it "
                          f"with decode='{decode}' (get_dataset(..., decode=...)) or without a transform")
    if not hasattr(dataset, "read") and decode != DEFAULT_DECODE:
        raise ConfigError(f"dataset '{dataset.name}' is not an ijepa_eval ImageDataset: it decodes its own images, "
                          f"so decode '{decode}' cannot apply; use decode 'pil'")
    return decode


def cache_entry_for(encoder: Any, dataset: Any, *, cache_dir: str | os.PathLike | None = None, n_last_blocks: int = 4,
                    device: str | torch.device = "cpu", decode: str | None = None, tokens: bool = False,
                    transform: Callable | None = None) -> tuple[CacheEntry, dict[str, Any]]:
    """Where get_features keeps (or will keep) these features, and the key fields naming it."""
    from ijepa_eval.data.transforms import Normalize

    transform = default_transform(encoder, dataset, transform)
    text = f"{describe_transform(transform)} | device: {Normalize()!r}" if transform else describe_transform(dataset.transform)
    precision = "bf16-autocast" if torch.device(device).type == "cuda" else "fp32"
    fields = key_fields(encoder, dataset, text, n_last_blocks, precision, resolve_decode(dataset, decode), tokens)
    return CacheEntry(resolve_cache_dir(cache_dir) / make_key(fields)), fields


def pools_of(encoder: Any, tokens: bool = False) -> list[str]:
    """What a cache entry stores per row: pooled block outputs ("avg", "cls": [n_last_blocks, D]) or the last
    block's patch tokens ("tokens": [num_patches, D], attentive probes' ``tokens: cached``)."""
    if tokens:
        return ["tokens"]
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
