"""Uncertainty of a reported number: intervals over test examples, paired tests, multiplicity, seed spread.

Everything starts from per-example predictions (labels [N] and top-k class indices [N, k], best first), so
no statistic needs a model or a re-run. Metrics are in percent, as in result JSONs:

- ``top1`` / ``top5``: share of examples whose label is the first / among the k predictions;
- ``mean_per_class_acc``: top-1 recall averaged over the classes present, the same definition as
  ``probes.metrics.scores_from_topk``.

**Which interval** (``metric_intervals``; the choice is recorded per metric in the result's ``ci.method``):

- The test split is *balanced by design* (``test_design``) when every class present has exactly the same
  number k ≥ 2 of examples, and i.i.d. labels would come out that balanced with probability < 1% whatever
  their class frequencies (``chance_of_balance``). ImageNet val (50/class), CIFAR-100 test (100),
  Places205 val (100) and iNat18 val (3) are; CLEVR val (counts follow the generator's scenes), a split
  with an unreadable image dropped, or a random 20-image pair of classes are not ("iid").
- top-1/top-5 on a balanced split: the class-stratified percentile bootstrap (``bootstrap``), as long as
  at least ``MIN_OUTCOMES`` examples are right and as many wrong. A percentile interval behaves like a
  Wald interval, whose average coverage at 20 / 50 / 100 errors is 93.8 / 94.6 / 94.8% (exact binomial
  sums); below the threshold, and on every split not balanced by design, Wilson's score interval
  (``proportions``), which over a stratified split is conservative (it counts between-class spread).
- mean per-class accuracy: on a balanced split it *is* top-1 and gets top-1's interval; otherwise the
  class-stratified bootstrap given the class counts (the estimand weights classes equally, so their
  frequencies carry no information about it); a plain percentile bootstrap over examples when a class
  has a single example.

**Paired tests** compare two results on the same test examples (``paired_test``): top-1/top-5 get Tango's
score interval for the difference and McNemar's score test, which is the same test at Δ = 0, so "interval
excludes 0" and "p < 0.05" are one event; mean per-class accuracy a (class-stratified) paired bootstrap
whose p-value is defined so that the same holds. ``holm`` adjusts the p-values of a family of tests.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy.special import gammaln

from ijepa_eval.bootstrap import (
    RESAMPLES,
    class_stratified_paired,
    class_stratified_share,
    example_resamples,
    mean_share,
    order_interval,
    percentile_interval,
)
from ijepa_eval.errors import ConfigError
from ijepa_eval.proportions import LEVEL, alpha, paired_score, wilson_interval, z_value

METRICS = ("top1", "top5", "mean_per_class_acc")
MIN_OUTCOMES = 50  # a balanced split's top-1/top-5 bootstrap needs >= 50 right and >= 50 wrong examples
CHANCE_OF_BALANCE = 0.01  # exact balance this unlikely under i.i.d. sampling means a designed split

Design = Literal["class-balanced", "iid"]
Verdict = Literal["win", "loss", "tie"]


def hits(labels: np.ndarray, topk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(top-1 correct, top-k correct) booleans [N]; ``topk`` [N, k] best first."""
    labels, topk = np.asarray(labels), np.asarray(topk)
    if topk.ndim != 2 or topk.shape[0] != labels.shape[0] or labels.ndim != 1 or len(labels) == 0:
        raise ConfigError(f"predictions must be labels [N] and top-k [N, k] with N >= 1; got {labels.shape} "
                          f"and {topk.shape}")
    match = topk == labels[:, None]
    return match[:, 0], match.any(1)


def class_cells(labels: np.ndarray, outcomes: list[np.ndarray]) -> np.ndarray:
    """[C, K] counts of class c's examples in each of the K disjoint ``outcomes`` (boolean [N]); C = max label + 1."""
    labels = np.asarray(labels, dtype=np.int64)
    return np.stack([np.bincount(labels, weights=o, minlength=labels.max() + 1) for o in outcomes], 1).astype(np.int64)


def chance_of_balance(classes: np.ndarray | int, per_class: np.ndarray | int) -> np.ndarray:
    """The largest probability that ``classes × per_class`` i.i.d. labels come out exactly ``per_class`` per
    class: the multinomial probability of those counts, which is largest when all classes are equally likely."""
    c, k = np.asarray(classes, dtype=np.float64), np.asarray(per_class, dtype=np.float64)
    return np.exp(gammaln(c * k + 1) - c * gammaln(k + 1) - c * k * np.log(np.maximum(c, 1)))


def balanced_by_design(sizes: np.ndarray) -> np.ndarray:
    """Per test set, from class sizes [..., C] (0 = absent): every class present has the same k >= 2
    examples and ``chance_of_balance`` < ``CHANCE_OF_BALANCE`` (see the module docstring)."""
    sizes = np.asarray(sizes, dtype=np.int64)
    present = sizes > 0
    classes, largest = present.sum(-1), sizes.max(-1)
    smallest = np.where(present, sizes, largest[..., None]).min(-1)
    equal = (smallest == largest) & (largest >= 2) & (classes >= 2)
    return equal & (chance_of_balance(classes, largest) < CHANCE_OF_BALANCE)


def test_design(labels: np.ndarray) -> Design:
    """"class-balanced" when the test split is balanced by design, else "iid"."""
    return "class-balanced" if balanced_by_design(np.bincount(np.asarray(labels, dtype=np.int64))) else "iid"


def point_metrics(labels: np.ndarray, topk: np.ndarray) -> dict[str, float]:
    """The metrics on the test set itself (percent)."""
    hit1, hit5 = hits(labels, topk)
    cells = class_cells(labels, [hit1, ~hit1])
    return {"top1": float(hit1.mean() * 100), "top5": float(hit5.mean() * 100),
            "mean_per_class_acc": float(mean_share(cells, [0]) * 100)}


@dataclass
class Intervals:
    """Intervals of many test sets at once (leading axes ``...``), and how each was made."""

    ci: dict[str, np.ndarray]  # metric -> [..., 2] (lo, hi) in percent
    method: dict[str, np.ndarray]  # metric -> [...] method names
    balanced: np.ndarray  # [...] bool: balanced by design


def count_intervals(sizes: np.ndarray, right1: np.ndarray, right5: np.ndarray, *, seed: int = 0,
                    level: float = LEVEL, resamples: int = RESAMPLES) -> Intervals:
    """Every metric's interval from per-class counts [..., C]: examples, top-1 right, top-5 right."""
    sizes, right1, right5 = (np.asarray(a, dtype=np.int64) for a in (sizes, right1, right5))
    rng = np.random.default_rng(seed)
    n, balanced = sizes.sum(-1), balanced_by_design(sizes)
    ci, method = {}, {}
    for metric, right in (("top1", right1), ("top5", right5)):
        k = right.sum(-1)
        ci[metric] = np.stack(wilson_interval(k, n, level), -1) * 100
        use = balanced & (np.minimum(k, n - k) >= MIN_OUTCOMES)
        if use.any():
            ci[metric][use] = percentile_interval(class_stratified_share(right[use], sizes[use], resamples, rng) * 100, level)
        method[metric] = np.where(use, "stratified-percentile", "wilson")
    mpc = "mean_per_class_acc"  # on a balanced split it is top-1, and so is its interval
    ci[mpc], method[mpc] = ci["top1"].copy(), method["top1"].copy()
    smallest = np.where(sizes > 0, sizes, n[..., None]).min(-1)
    strat, plain = ~balanced & (smallest >= 2), ~balanced & (smallest < 2)
    if strat.any():
        ci[mpc][strat] = percentile_interval(class_stratified_share(right1[strat], sizes[strat], resamples, rng) * 100,
                                             level)
    if plain.any():
        cells = np.stack([right1[plain], sizes[plain] - right1[plain]], -1)
        shares = np.concatenate([mean_share(c, [0]) for c in example_resamples(cells, resamples, rng)])
        ci[mpc][plain] = percentile_interval(np.moveaxis(shares, 0, -1) * 100, level)
    method[mpc] = np.where(strat, "stratified-percentile", np.where(plain, "percentile", method[mpc]))
    return Intervals(ci, method, balanced)


def metric_intervals(labels: np.ndarray, topk: np.ndarray, *, seed: int = 0, level: float = LEVEL,
                     resamples: int = RESAMPLES) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """({metric: [lo, hi]} in percent, the result's ``ci`` record: level, design, method per metric, …)."""
    hit1, hit5 = hits(labels, topk)
    cells = class_cells(labels, [hit1, hit5, np.ones_like(hit1)])
    got = count_intervals(cells[:, 2], cells[:, 0], cells[:, 1], seed=seed, level=level, resamples=resamples)
    method = {m: str(v) for m, v in got.method.items()}
    record = ci_record("class-balanced" if got.balanced else "iid", method, level=level, resamples=resamples, seed=seed)
    return {m: [float(v) for v in got.ci[m]] for m in METRICS}, record


def ci_record(design: Design, method: dict[str, str], *, level: float = LEVEL, resamples: int = RESAMPLES,
              seed: int = 0, **extra: Any) -> dict[str, Any]:
    """A result's ``ci``: how its ``metrics_ci`` were made (the test split's design, the method per metric)."""
    return {"level": level, "design": design, "method": method, "resamples": resamples, "seed": seed, **extra}


@dataclass(frozen=True)
class PairedTest:
    """A result against a reference on the same test examples, for one metric (differences in points)."""

    metric: str
    diff: float  # result − reference
    diff_ci: list[float]  # interval of the difference, from the same method as p_value
    p_value: float  # < 1 − level exactly when diff_ci excludes 0
    n_better: int  # examples the result gets right and the reference wrong (top1/top5 tests, else 0)
    n_worse: int
    verdict: Verdict  # win / loss: diff_ci lies above / below 0
    method: str  # "tango-score" (top1/top5) | "stratified-paired-percentile" | "paired-percentile"
    level: float = LEVEL
    resamples: int | None = None  # bootstrap tests: their p-value is a multiple of 2 / resamples

    def p_text(self) -> str:
        """``p = 0.0312``; a bootstrap p-value of 0 as the bound it is, ``p < 0.002``."""
        if self.p_value == 0 and self.resamples:
            return f"p < {2 / self.resamples:.2g}"
        return f"p = {self.p_value:.3g}"

    @property
    def significant(self) -> bool:
        return self.verdict != "tie"


def paired_test(labels: np.ndarray, topk: np.ndarray, ref_topk: np.ndarray, metric: str = "top1", *,
                resamples: int = RESAMPLES, seed: int = 0, level: float = LEVEL) -> PairedTest:
    """Is ``topk`` better than ``ref_topk`` on ``metric``, beyond test-set sampling noise, at ``level``?

    top1/top5 (and mean per-class accuracy on a balanced split, where it equals top-1): Tango's score
    interval and McNemar's score test on the discordant examples. Mean per-class accuracy otherwise: a
    class-stratified paired bootstrap (the same resampled examples for both), or over examples when a class
    has a single example; win/loss when its interval excludes 0.
    """
    if metric not in METRICS:
        raise ConfigError(f"no paired test for metric '{metric}'; available: {', '.join(METRICS)}")
    labels = np.asarray(labels, dtype=np.int64)
    ours, ref = hits(labels, topk), hits(labels, ref_topk)
    n = len(labels)
    if metric != "mean_per_class_acc" or test_design(labels) == "class-balanced":
        a, b = (ours[1], ref[1]) if metric == "top5" else (ours[0], ref[0])
        better, worse = int((a & ~b).sum()), int((~a & b).sum())
        s = paired_score(better, worse, n, level)
        diff, lo, hi, p, method = 100 * s.diff, 100 * s.lo, 100 * s.hi, s.p_value, "tango-score"
    else:
        better = worse = 0
        a, b = ours[0], ref[0]
        cells = class_cells(labels, [a & b, a & ~b, ~a & b, ~a & ~b])
        rng = np.random.default_rng(seed)
        if cells.sum(1).min() >= 2:
            diffs = class_stratified_paired(cells, resamples, rng) * 100
            method = "stratified-paired-percentile"
        else:
            diffs = np.concatenate([mean_share(c, [0, 1]) - mean_share(c, [0, 2])
                                    for c in example_resamples(cells, resamples, rng)]) * 100
            method = "paired-percentile"
        lo, hi, p = order_interval(diffs, level)
        diff = point_metrics(labels, topk)[metric] - point_metrics(labels, ref_topk)[metric]
    verdict: Verdict = "win" if lo > 0 else "loss" if hi < 0 else "tie"
    return PairedTest(metric, diff, [lo, hi], p, better, worse, verdict, method, level,
                      None if method == "tango-score" else resamples)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values, in the input order: the i-th smallest of m is multiplied by
    m − i (i from 0), made non-decreasing in that order and capped at 1. Reject where adjusted < alpha."""
    p = np.asarray(p_values, dtype=np.float64)
    if p.size and (np.isnan(p).any() or p.min() < 0 or p.max() > 1):
        raise ConfigError("Holm's adjustment needs p-values in [0, 1]")
    order = np.argsort(p, kind="stable")
    stepped = np.minimum(1.0, np.maximum.accumulate(p[order] * (len(p) - np.arange(len(p)))))
    adjusted = np.empty_like(p)
    adjusted[order] = stepped
    return [float(v) for v in adjusted]


def significant(p_value: float, level: float = LEVEL) -> bool:
    """p < 1 − level (for a Holm-adjusted p-value too)."""
    return p_value < alpha(level)


def seed_summary(values: list[float]) -> dict[str, float]:
    """{mean, std} over probe seeds; std is the sample standard deviation (ddof 1)."""
    if len(values) < 2:
        raise ConfigError(f"a spread over seeds needs at least 2 runs, got {len(values)}")
    arr = np.asarray(values, dtype=np.float64)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1))}


def widen_by_seeds(value: float, ci: Sequence[float], seed_std: float, level: float = LEVEL) -> tuple[float, float]:
    """A test-set interval widened by the probe-seed spread: each side's half-width and z·std are added in
    quadrature (which test images and which head initialisation are independent sources of variation)."""
    if seed_std < 0:
        raise ConfigError(f"a seed standard deviation cannot be negative, got {seed_std}")
    spread = z_value(level) * seed_std
    return (value - math.hypot(value - ci[0], spread), value + math.hypot(ci[1] - value, spread))
