"""Cached features as the probes see them: named representations over the readable rows, plus labels.

The cache stores every pooled block output ([N, n_last_blocks, D], oldest block first), so each VISSL
representation is a slice: ``lastPOOL`` = the last block, ``concatPOOL4`` = the last four concatenated
(its last D columns equal ``lastPOOL``); ``CLS`` variants read the class-token arrays.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ijepa_eval.errors import ConfigError, unknown_choice

POOL_OF_KIND = {"POOL": "avg", "CLS": "cls"}
REPRESENTATION_NAME = re.compile(r"^(last|concat)(POOL|CLS)(\d*)$")


def available_representations(n_last_blocks: int, pools: list[str]) -> list[str]:
    if "tokens" in pools:  # last-layer patch tokens (attentive probes), read with FeatureSet.tokens()
        return ["lastTOKENS"]
    names = []
    for kind, pool in POOL_OF_KIND.items():
        if pool in pools:
            names.append(f"last{kind}")
            if n_last_blocks > 1:
                names.append(f"concat{kind}{n_last_blocks}")
    return names


def parse_representation(name: str, n_last_blocks: int, pools: list[str]) -> tuple[str, int]:
    """``(pool, n_blocks)`` for a name like concatPOOL4; ConfigError listing what these features offer."""
    match = REPRESENTATION_NAME.match(name)
    if match:
        mode, kind, digits = match.groups()
        if mode == "last" and not digits:
            n = 1
        elif mode == "concat" and digits and int(digits) > 1:
            n = int(digits)
        else:
            n = 0
        if n and n <= n_last_blocks and POOL_OF_KIND[kind] in pools:
            return POOL_OF_KIND[kind], n
    raise ConfigError(
        unknown_choice("representation", name, available_representations(n_last_blocks, pools))
        + f" (features hold {n_last_blocks} block(s); pass a larger --n-last-blocks for longer concatenations)"
    )


@dataclass
class FeatureSet:
    """Features of one (encoder, dataset split), backed by the cache's memory-mapped float16 shards.

    ``labels`` and ``indices`` (dataset index of each row) cover the readable rows only: images dropped
    with ``skip_bad_images`` are listed in ``meta["bad_indices"]``.
    """

    labels: np.ndarray
    indices: np.ndarray
    num_classes: int
    meta: dict[str, Any]
    n_last_blocks: int
    pools: list[str]
    shards: Mapping[str, list[np.ndarray]] = field(repr=False)
    keep: np.ndarray | None = field(default=None, repr=False)  # bool [N]; None = every row readable

    def __len__(self) -> int:
        return len(self.labels)

    def available_representations(self) -> list[str]:
        return available_representations(self.n_last_blocks, self.pools)

    def representation(self, name: str) -> torch.Tensor:
        """float32 [N, n * D] for lastPOOL | concatPOOL4 | lastCLS | concatCLS4 (any concat<n> ≤ stored)."""
        pool, n = parse_representation(name, self.n_last_blocks, self.pools)
        shards = self.shards[pool]
        # Filled in place: concatenating per-shard copies would double the peak (52 GB for ImageNet ViT-H).
        out = np.empty((len(self), n * shards[0].shape[-1]), dtype=np.float32)
        row = filled = 0
        for array in shards:
            rows = slice(None) if self.keep is None else self.keep[row : row + len(array)]
            block = array[rows, -n:, :]  # float16: a copy only when rows are dropped
            out[filled : filled + len(block)].reshape(block.shape)[:] = block
            filled += len(block)
            row += len(array)
        return torch.from_numpy(out)

    def tokens(self) -> torch.Tensor:
        """float16 [N, num_patches, D]: the stored last-layer patch tokens (``get_features(tokens=True)``),
        read into memory (``tokens_bytes`` of them)."""
        if "tokens" not in self.pools:
            raise ConfigError("these features hold pooled blocks, not patch tokens; extract with tokens=True")
        parts, start = [], 0
        for array in self.shards["tokens"]:
            parts.append(array[slice(None) if self.keep is None else self.keep[start : start + len(array)]])
            start += len(array)
        return torch.from_numpy(np.concatenate(parts))
