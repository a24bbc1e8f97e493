"""Uncertainty of a reported number: bootstrap intervals over test examples and paired significance.

Everything starts from per-example predictions (labels [N] and top-k class indices [N, k], best first), so
no statistic needs a model or a re-run. Metrics are in percent, as in result JSONs:

- ``top1`` / ``top5``: share of examples whose label is the first / among the k predictions;
- ``mean_per_class_acc``: top-1 recall averaged over the classes present (in the resample, for bootstraps),
  the same definition as ``probes.metrics.scores_from_topk``.

Intervals are percentile bootstraps: resample the N test examples with replacement ``resamples`` times
(``np.random.default_rng(seed).integers(0, N, N)`` per resample, drawn in chunks — the stream is the same),
compute every metric on each resample, keep the central ``level`` mass. Paired tests compare two results
on the *same* test examples: McNemar's exact test on top-1 / top-5 correctness (only discordant examples
count), a paired bootstrap of the difference for mean per-class accuracy.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.stats import binom

from ijepa_eval.errors import ConfigError

METRICS = ("top1", "top5", "mean_per_class_acc")
LEVEL = 0.95
RESAMPLES = 1000
CHUNK_ELEMENTS = 1 << 22  # indices drawn per chunk (32 MB of int64): bounds memory for any N

Verdict = Literal["win", "loss", "tie"]


def hits(labels: np.ndarray, topk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(top-1 correct, top-k correct) booleans [N]; ``topk`` [N, k] best first."""
    labels, topk = np.asarray(labels), np.asarray(topk)
    if topk.ndim != 2 or topk.shape[0] != labels.shape[0] or labels.ndim != 1:
        raise ConfigError(f"predictions must be labels [N] and top-k [N, k]; got {labels.shape} and {topk.shape}")
    match = topk == labels[:, None]
    return match[:, 0], match.any(1)


def resample_indices(n: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Bootstrap index rows [b, n], in chunks; concatenated they equal ``integers(0, n, (resamples, n))``."""
    if n < 1 or resamples < 1:
        raise ConfigError(f"a bootstrap needs at least one example and one resample (got {n}, {resamples})")
    rng = np.random.default_rng(seed)
    per_chunk = max(1, CHUNK_ELEMENTS // n)
    for start in range(0, resamples, per_chunk):
        yield rng.integers(0, n, size=(min(per_chunk, resamples - start), n))


def _metrics_of(idx: np.ndarray, labels: np.ndarray, hit1: np.ndarray, hit5: np.ndarray,
                num_classes: int) -> dict[str, np.ndarray]:
    """Every metric of every resample row of ``idx`` [b, n], vectorised (percent)."""
    b, n = idx.shape
    h1 = hit1[idx]
    # per-class counts of all resamples at once: class c of row r goes to bin r * C + c
    bins = (labels[idx] + num_classes * np.arange(b)[:, None]).ravel()
    total = np.bincount(bins, minlength=b * num_classes).reshape(b, num_classes)
    correct = np.bincount(bins, weights=h1.ravel(), minlength=b * num_classes).reshape(b, num_classes)
    present = total > 0
    recall = np.divide(correct, total, out=np.zeros_like(correct), where=present)
    return {
        "top1": h1.sum(1) * 100.0 / n,
        "top5": hit5[idx].sum(1) * 100.0 / n,
        "mean_per_class_acc": recall.sum(1) * 100.0 / present.sum(1),
    }


def bootstrap_distribution(labels: np.ndarray, topk: np.ndarray, *, resamples: int = RESAMPLES,
                           seed: int = 0) -> dict[str, np.ndarray]:
    """Every metric on each of ``resamples`` bootstrap resamples: {metric: [resamples]}."""
    labels = np.asarray(labels, dtype=np.int64)
    hit1, hit5 = hits(labels, topk)
    num_classes = int(labels.max()) + 1
    parts = [_metrics_of(idx, labels, hit1, hit5, num_classes)
             for idx in resample_indices(len(labels), resamples, seed)]
    return {m: np.concatenate([p[m] for p in parts]) for m in METRICS}


def interval(samples: np.ndarray, level: float = LEVEL) -> list[float]:
    """Central ``level`` percentile interval [lo, hi] of bootstrap samples."""
    if not 0.0 < level < 1.0:
        raise ConfigError(f"confidence level must be in (0, 1), got {level}")
    tail = (1.0 - level) / 2 * 100.0
    lo, hi = np.percentile(samples, [tail, 100.0 - tail])
    return [float(lo), float(hi)]


def bootstrap_ci(labels: np.ndarray, topk: np.ndarray, *, resamples: int = RESAMPLES, seed: int = 0,
                 level: float = LEVEL) -> dict[str, list[float]]:
    """{metric: [lo, hi]} percentile intervals for top1, top5 and mean per-class accuracy (percent)."""
    dist = bootstrap_distribution(labels, topk, resamples=resamples, seed=seed)
    return {m: interval(v, level) for m, v in dist.items()}


def point_metrics(labels: np.ndarray, topk: np.ndarray) -> dict[str, float]:
    """The metrics on the test set itself (what the bootstrap resamples)."""
    labels = np.asarray(labels, dtype=np.int64)
    idx = np.arange(len(labels))[None]
    hit1, hit5 = hits(labels, topk)
    return {m: float(v[0]) for m, v in _metrics_of(idx, labels, hit1, hit5, int(labels.max()) + 1).items()}


def mcnemar_exact(n01: int, n10: int) -> float:
    """Two-sided exact McNemar p-value: discordant pairs ~ Binomial(n01 + n10, 1/2) under no difference."""
    n = n01 + n10
    if n == 0:
        return 1.0
    return float(min(1.0, 2.0 * binom.cdf(min(n01, n10), n, 0.5)))


@dataclass(frozen=True)
class PairedTest:
    """A result against a reference on the same test examples, for one metric (differences in points)."""

    metric: str
    diff: float  # result − reference
    diff_ci: list[float]  # paired bootstrap interval of the difference
    p_value: float | None  # McNemar exact (top1/top5); None where the bootstrap decides (mean per-class)
    n_better: int  # examples the result gets right and the reference wrong (top1/top5 only, else 0)
    n_worse: int
    verdict: Verdict

    @property
    def significant(self) -> bool:
        return self.verdict != "tie"


def paired_test(labels: np.ndarray, topk: np.ndarray, ref_topk: np.ndarray, metric: str = "top1", *,
                resamples: int = RESAMPLES, seed: int = 0, level: float = LEVEL) -> PairedTest:
    """Is ``topk`` better than ``ref_topk`` on ``metric``, beyond test-set sampling noise, at ``level``?

    top1/top5: McNemar's exact test on per-example correctness, win/loss when p < 1 − level.
    mean_per_class_acc (not a mean of per-example scores): a paired bootstrap of the difference — the same
    resampled examples for both — wins/loses when its interval excludes 0.
    """
    if metric not in METRICS:
        raise ConfigError(f"no paired test for metric '{metric}'; available: {', '.join(METRICS)}")
    labels = np.asarray(labels, dtype=np.int64)
    ours, ref = hits(labels, topk), hits(labels, ref_topk)
    num_classes = int(labels.max()) + 1
    diffs = []
    for idx in resample_indices(len(labels), resamples, seed):
        diffs.append(_metrics_of(idx, labels, *ours, num_classes)[metric]
                     - _metrics_of(idx, labels, *ref, num_classes)[metric])
    diff_ci = interval(np.concatenate(diffs), level)
    point = point_metrics(labels, topk)[metric] - point_metrics(labels, ref_topk)[metric]
    if metric == "mean_per_class_acc":
        p_value, n_better, n_worse = None, 0, 0
        significant = diff_ci[0] > 0 or diff_ci[1] < 0
    else:
        a, b = (ours[0], ref[0]) if metric == "top1" else (ours[1], ref[1])
        n_better, n_worse = int((a & ~b).sum()), int((~a & b).sum())
        p_value = mcnemar_exact(n_better, n_worse)
        significant = p_value < 1.0 - level
    verdict: Verdict = "tie" if not significant or point == 0 else ("win" if point > 0 else "loss")
    return PairedTest(metric, point, diff_ci, p_value, n_better, n_worse, verdict)


def seed_summary(values: list[float]) -> dict[str, float]:
    """{mean, std} over probe seeds; std is the sample standard deviation (ddof 1)."""
    if len(values) < 2:
        raise ConfigError(f"a spread over seeds needs at least 2 runs, got {len(values)}")
    arr = np.asarray(values, dtype=np.float64)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1))}
