"""Held-out splits and head selection: choose on data the reported number never saw.

The paper (and VISSL) pick the best head on the very split they report. The default here holds out a
fixed, seeded, class-balanced 10% of train instead; ``--select-on test`` keeps the paper's convention
and the result JSON records which one was used.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ijepa_eval.errors import ConfigError


def sample_per_class(labels: np.ndarray, count: Callable[[int], int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split row indices into (chosen, rest): ``count(n_c)`` random rows of every class c (seeded).

    Both outputs are sorted, so the result depends on the labels and the seed only.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        chosen.append(rng.permutation(rows)[: count(len(rows))])
    picked = np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)
    rest = np.setdiff1d(np.arange(len(labels)), picked)
    return picked.astype(np.int64), rest.astype(np.int64)


def class_balanced_holdout(labels: np.ndarray, fraction: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train_rows, holdout_rows): ``fraction`` of every class held out, at least one row left to train on.

    Classes with a single example stay entirely in train.
    """
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"holdout_fraction must be in (0, 1), got {fraction}")
    holdout, train = sample_per_class(labels, lambda n: min(n - 1, max(1, round(fraction * n))), seed)
    if len(holdout) == 0:
        raise ConfigError("no class has two examples, so nothing can be held out; use --select-on test")
    return train, holdout


def few_shot_rows(labels: np.ndarray, shots: int, seed: int = 0) -> np.ndarray:
    """``shots`` random rows per class (all rows of smaller classes), seeded."""
    if shots < 1:
        raise ConfigError(f"shots must be >= 1, got {shots}")
    return sample_per_class(labels, lambda n: min(n, shots), seed)[0]


def select_head(scores: Sequence[dict[str, float]], metric: str = "top1", higher_is_better: bool = True) -> int:
    """Index of the best head on ``metric``; ties go to the earliest head in grid order."""
    if not scores:
        raise ConfigError("no head to select from")
    if metric not in scores[0]:
        raise ConfigError(f"selection metric '{metric}' is not scored; available: {', '.join(scores[0])}")
    values = [s[metric] for s in scores]
    best = max(values) if higher_is_better else min(values)
    return values.index(best)
