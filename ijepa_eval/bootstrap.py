"""Bootstrap resampling of test examples, computed from per-class outcome counts (any leading batch axes).

Every metric here depends on the test examples only through how many examples of each class had each
outcome (top-1 right / wrong, or for two results both right / only A / only B / neither), so resampling
examples is drawing those counts, and many simulated test sets can be resampled at once. Two schemes
(``ijepa_eval.stats`` decides which one a number gets):

- class-stratified (``class_stratified_share`` / ``class_stratified_paired``): the class sizes are held
  fixed and every class redraws ``n_c − 1`` of its ``n_c`` examples with replacement (McCarthy & Snowden
  1985). Redrawing ``n_c`` would shrink the variance of a class's share by (n_c − 1) / n_c: 2/3 at iNat18's
  3 images per class, where a 95% interval then covers 88%. Classes with the same counts are drawn as one
  binomial / multinomial (a sum of independent ones with the same probabilities is one).
- over examples (``example_resamples``): all N examples redrawn with replacement — a multinomial over the
  (class, outcome) cells — for a split where some class has a single example (no within-class variation).

``example_weights`` draws the same two schemes as weights on the examples themselves, for statistics that
need one draw shared by several outcomes of the same examples: ImageNet-C's 75 corrupted copies of one set
of images, ReaL's ratio of right to evaluated images (``ijepa_eval.shift.metrics``).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from scipy.stats import binom

from ijepa_eval.errors import ConfigError
from ijepa_eval.proportions import alpha

RESAMPLES = 1000
CHUNK_ELEMENTS = 1 << 22  # counts drawn per chunk (32 MB of int64): bounds memory for any number of classes


def binomial_draws(trials: np.ndarray, p: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """[G, resamples] draws of Binomial(trials_g, p_g), each the inverse CDF of one uniform.

    Exact, and far cheaper than ``rng.binomial`` (one uniform and a binary search per draw): every group's
    CDF is tabulated once, shifted into [g, g + 1] so that all groups share one sorted table.
    """
    trials, p = np.asarray(trials, dtype=np.int64), np.asarray(p, dtype=np.float64)
    starts = np.concatenate([[0], np.cumsum(trials + 1)[:-1]])
    group = np.repeat(np.arange(len(trials)), trials + 1)
    table = binom.cdf(np.arange(len(group)) - starts[group], trials[group], p[group]) + group
    u = rng.random((len(trials), resamples)) + np.arange(len(trials))[:, None]
    first = np.searchsorted(table, u, side="left")  # the smallest k with CDF(k) >= u
    return np.clip(first - starts[:, None], 0, trials[:, None])


def class_stratified_share(right: np.ndarray, sizes: np.ndarray, resamples: int,
                           rng: np.random.Generator) -> np.ndarray:
    """Mean over the classes present of each class's share of ``right`` examples, on class-stratified
    resamples: ``right`` / ``sizes`` [..., C] -> [..., resamples]. Every present class needs >= 2 examples."""
    right, sizes = np.asarray(right, dtype=np.int64), np.asarray(sizes, dtype=np.int64)
    batch, c = sizes.shape[:-1], sizes.shape[-1]
    sizes, right = sizes.reshape(-1, c), right.reshape(-1, c)
    present = sizes > 0
    if not present.any(1).all() or sizes[present].min() < 2:
        raise ConfigError("a class-stratified bootstrap needs at least 2 examples in every class present")
    out = np.empty((len(sizes), resamples))
    step = max(1, CHUNK_ELEMENTS // (resamples * c))  # test sets per block: bounds the draws held at once
    for start in range(0, len(sizes), step):
        block = slice(start, start + step)
        where = np.nonzero(present[block])
        keys = np.stack([where[0], sizes[block][where], right[block][where]], 1)
        strata, classes = np.unique(keys, axis=0, return_counts=True)  # sorted by test set first
        s, n, h = strata.T
        drawn = binomial_draws(classes * (n - 1), h / n, resamples, rng) / (n - 1)[:, None]
        out[block] = np.add.reduceat(drawn, np.searchsorted(s, np.arange(len(present[block]))), axis=0)
    return (out / present.sum(1)[:, None]).reshape(*batch, resamples)


def class_stratified_paired(cells: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Mean over classes of (share only A gets right − share only B gets right), class-stratified:
    [resamples]. ``cells`` [C, 4]: per class, examples both / only A / only B / neither get right."""
    cells = np.asarray(cells, dtype=np.int64)
    cells = cells[cells.sum(1) > 0]
    if len(cells) == 0 or cells.sum(1).min() < 2:
        raise ConfigError("a class-stratified bootstrap needs at least 2 examples in every class present")
    rows, classes = np.unique(cells, axis=0, return_counts=True)
    n = rows.sum(1)
    diff = np.empty(resamples)
    step = max(1, CHUNK_ELEMENTS // (4 * len(rows)))
    for start in range(0, resamples, step):
        b = min(step, resamples - start)
        counts = rng.multinomial((classes * (n - 1))[:, None], (rows / n[:, None])[:, None, :], size=(len(rows), b))
        diff[start:start + b] = ((counts[..., 1] - counts[..., 2]) / (n - 1)[:, None]).sum(0)
    return diff / classes.sum()


def example_resamples(cells: np.ndarray, resamples: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Resampled cells [b, ..., C, K] in chunks: all N examples of each test set redrawn with replacement."""
    cells = np.asarray(cells, dtype=np.int64)
    flat = cells.reshape(*cells.shape[:-2], -1)
    n = flat.sum(-1)
    if n.min() < 1 or resamples < 1:
        raise ConfigError("a bootstrap needs at least one example and one resample")
    step = max(1, CHUNK_ELEMENTS // flat.size)
    for start in range(0, resamples, step):
        b = min(step, resamples - start)
        yield rng.multinomial(n, flat / n[..., None], size=(b, *n.shape)).reshape(b, *cells.shape)


def example_weights(labels: np.ndarray, resamples: int, rng: np.random.Generator, *,
                    stratified: bool) -> Iterator[np.ndarray]:
    """[b, N] weights of the N examples in each resample, in chunks; every row sums to 1, so ``values @ w.T``
    are the resampled means of per-example ``values`` [M, N], all M rows on the same draw.

    ``stratified``: class c keeps its share n_c / N of the weight, spread over n_c − 1 of its n_c examples
    redrawn with replacement (the scheme of ``class_stratified_share``; every class needs >= 2 examples);
    otherwise all N examples are redrawn, 1 / N each.
    """
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    if n < 1 or resamples < 1 or labels.ndim != 1:
        raise ConfigError("a bootstrap needs labels [N] with N >= 1 and at least one resample")
    if stratified:
        order = np.argsort(labels, kind="stable")
        _, starts, sizes = np.unique(labels[order], return_index=True, return_counts=True)
        if sizes.min() < 2:
            raise ConfigError("a class-stratified bootstrap needs at least 2 examples in every class present")
        slot = np.repeat(np.arange(len(sizes)), sizes - 1)  # one slot per redrawn example, by class
        first, span, weight = starts[slot], sizes[slot], (sizes / ((sizes - 1) * n))[slot]
    else:
        order, first, span, weight = np.arange(n), np.zeros(n, np.int64), np.full(n, n), np.full(n, 1.0 / n)
    step = max(1, CHUNK_ELEMENTS // max(len(span), n))
    for start in range(0, resamples, step):
        b = min(step, resamples - start)
        picked = order[first + rng.integers(0, span, size=(b, len(span)))] + n * np.arange(b)[:, None]
        yield np.bincount(picked.ravel(), np.broadcast_to(weight, picked.shape).ravel(), b * n).reshape(b, n)


def mean_share(cells: np.ndarray, right: list[int]) -> np.ndarray:
    """Mean over the classes present (size > 0) of the share of examples in the ``right`` outcome columns."""
    sizes = cells.sum(-1)
    share = np.divide(cells[..., right].sum(-1), sizes, out=np.zeros(sizes.shape), where=sizes > 0)
    return share.sum(-1) / (sizes > 0).sum(-1)


def percentile_interval(samples: np.ndarray, level: float) -> np.ndarray:
    """Central ``level`` percentile interval [..., 2] (lo, hi) of bootstrap samples [..., B] (numpy's
    linear interpolation)."""
    tail = alpha(level) / 2 * 100.0
    return np.moveaxis(np.percentile(samples, [tail, 100.0 - tail], axis=-1), 0, -1)


def order_interval(diffs: np.ndarray, level: float) -> tuple[float, float, float]:
    """(lo, hi, p) of bootstrap differences: order statistics and the two-sided bootstrap p-value
    2·min(share ≤ 0, share ≥ 0), chosen so that p < 1 − level exactly when [lo, hi] excludes 0.

    With B sorted samples and j = ceil(B(1 − level)/2) − 1: lo = x_(j) > 0 ⇔ at most j samples are ≤ 0 ⇔
    p < 1 − level (and likewise for hi = x_(B−1−j) < 0).
    """
    x = np.sort(np.asarray(diffs, dtype=np.float64))
    b = len(x)
    j = int(np.ceil(round(b * alpha(level) / 2, 9))) - 1
    if j < 0:
        raise ConfigError(f"{b} resamples are too few for a {level:.0%} interval")
    p = min(1.0, 2.0 * min(int((x <= 0).sum()), int((x >= 0).sum())) / b)
    return float(x[j]), float(x[b - 1 - j]), p
