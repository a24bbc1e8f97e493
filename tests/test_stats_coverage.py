"""Coverage of the printed 95% intervals, measured: 2000 simulated test sets per regime (5000 where only the
cheap Wilson interval is checked), drawn from a known population, every set's intervals computed by the
code results use (``stats.count_intervals``, all sets at once). A 95% interval must contain the truth in
93.5–96.5% of them (±3 binomial standard errors at 2000 sets).

Regimes (the README's uncertainty section quotes them):

- balanced many-class: 200 classes × 3 test images (iNat18's val design), class accuracies spread
  (Beta(3.5, 1.5), mean 0.7) → class-stratified bootstrap for every metric;
- imbalanced: 1000 i.i.d. labels over 10 classes with Zipf frequencies, accuracy 0.9 (common) to 0.5 (rare)
  → Wilson for top-1/top-5, class-stratified bootstrap for mean per-class accuracy;
- small N: 20 i.i.d. labels over 4 classes, accuracy drawn from U(0.6, 0.95) per set → Wilson;
- p near 1: 1000 i.i.d. labels over 2 classes, accuracy from U(0.98, 0.999) (1–20 errors) → Wilson.

Top-5 accuracy is a + (1 − a) / 2 throughout. Accuracy is drawn per set in the last two regimes because at
one fixed (N, p) every interval's coverage jumps with the lattice of possible counts (Wilson: 92–98% for
N ≤ 1000); what a user can rely on is the coverage around their accuracy.
"""

from __future__ import annotations

import numpy as np
import pytest

from ijepa_eval import stats
from ijepa_eval.bootstrap import example_resamples, mean_share, percentile_interval

SETS = 2000
BAND = (0.935, 0.965)


def outcomes(rng, sizes, top1, top5):
    """Per-class top-5 right ~ Binomial(size, top5), top-1 right among them ~ Binomial(·, top1 / top5)."""
    right5 = rng.binomial(sizes, top5)
    return rng.binomial(right5, top1 / top5), right5


def coverage(got: stats.Intervals, truth: dict[str, np.ndarray], metrics) -> dict[str, float]:
    return {m: float(((got.ci[m][..., 0] <= truth[m]) & (truth[m] <= got.ci[m][..., 1])).mean()) for m in metrics}


def balanced_many_class(rng):
    acc = rng.beta(3.5, 1.5, 200)
    sizes = np.full((SETS, 200), 3)
    truth = {"top1": acc.mean() * 100, "top5": (acc + (1 - acc) / 2).mean() * 100}
    return sizes, acc, truth | {"mean_per_class_acc": truth["top1"]}


def imbalanced(rng):
    freq = 1 / np.arange(1, 11)
    freq /= freq.sum()
    acc = np.linspace(0.9, 0.5, 10)
    sizes = rng.multinomial(1000, freq, size=SETS)
    truth = {"top1": freq @ acc * 100, "top5": freq @ (acc + (1 - acc) / 2) * 100, "mean_per_class_acc": acc.mean() * 100}
    return sizes, acc, truth


def uniform_accuracy(n, classes, lo, hi, sets=5000):
    def regime(rng):
        acc = rng.uniform(lo, hi, sets)
        sizes = rng.multinomial(n, np.full(classes, 1 / classes), size=sets)
        return sizes, np.repeat(acc[:, None], classes, 1), {"top1": acc * 100, "top5": (acc + (1 - acc) / 2) * 100}
    return regime


REGIMES = {
    "balanced many-class": (balanced_many_class, stats.METRICS, "stratified-percentile", "stratified-percentile"),
    "imbalanced": (imbalanced, stats.METRICS, "wilson", "stratified-percentile"),
    "small N": (uniform_accuracy(20, 4, 0.6, 0.95), ("top1", "top5"), "wilson", None),
    "p near 1": (uniform_accuracy(1000, 2, 0.98, 0.999), ("top1", "top5"), "wilson", None),
}


@pytest.mark.parametrize("regime", REGIMES)
def test_intervals_cover_the_truth_95_percent_of_the_time(regime):
    make, metrics, top1_method, mpc_method = REGIMES[regime]
    rng = np.random.default_rng(2026)
    sizes, acc, truth = make(rng)
    right1, right5 = outcomes(rng, sizes, acc, acc + (1 - acc) / 2)
    got = stats.count_intervals(sizes, right1, right5, seed=1)
    assert (got.method["top1"] == top1_method).all() and (got.method["top5"] == top1_method).all()
    if mpc_method:
        assert (got.method["mean_per_class_acc"] == mpc_method).all()
    for metric, covered in coverage(got, truth, metrics).items():
        assert BAND[0] <= covered <= BAND[1], (regime, metric, covered)


def test_the_percentile_bootstrap_the_suite_used_before_fails_the_small_n_regime():
    """The same check catches the old interval: resampling 20 examples (p = 0.9, the issue's example)."""
    rng = np.random.default_rng(7)
    right = rng.binomial(20, 0.9, SETS)
    cells = np.stack([right, 20 - right], -1)[:, None, :]  # one class per set
    shares = np.concatenate([mean_share(c, [0]) for c in example_resamples(cells, 1000, rng)])
    ci = percentile_interval(np.moveaxis(shares, 0, -1), 0.95)
    covered = ((ci[:, 0] <= 0.9) & (0.9 <= ci[:, 1])).mean()
    assert covered < BAND[0], covered
