"""Score intervals and tests for shares of test examples, in closed form (proportions in [0, 1]).

- ``wilson_interval``: Wilson's score interval for one proportion (top-1 / top-5 accuracy of i.i.d. test
  examples). Chosen over Clopper–Pearson because its coverage *averaged over accuracies* is close to 95% at
  every N (95.1–95.7% for N = 20 … 1000 and accuracies up to 0.999, exact binomial sums), where
  Clopper–Pearson's is 96.3–98.6% (guaranteed ≥ 95%, hence wider than needed); the percentile bootstrap, a
  Wald interval in disguise, falls to 88% at N = 20, p = 0.9 and to 86% at N = 2000, p = 0.999.
- ``tango_interval`` and ``mcnemar_score_p``: one method for a paired difference of accuracies on the same
  test examples. Tango's (1998) score interval for Δ = P(only A right) − P(only B right) is the set of Δ₀
  its score test does not reject; at Δ₀ = 0 that test *is* McNemar's test without continuity correction,
  z = (b − c) / √(b + c). So the interval excludes 0 exactly when McNemar's p < 1 − level, by construction
  (``paired_score``), which the exact conditional McNemar test and a bootstrap interval did not promise.
  Fagerland, Lydersen & Laake (BMC Med Res Methodol 2013; Stat Med 2014) recommend both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq
from scipy.stats import norm

from ijepa_eval.errors import ConfigError

LEVEL = 0.95


def alpha(level: float = LEVEL) -> float:
    """1 − level without float residue (1 − 0.95 is 0.050000000000000044): p < alpha(level) is significant."""
    if not 0.0 < level < 1.0:
        raise ConfigError(f"confidence level must be in (0, 1), got {level}")
    return round(1.0 - level, 12)


def z_value(level: float = LEVEL) -> float:
    """Two-sided normal quantile of a ``level`` interval (1.96 for 0.95)."""
    return float(norm.isf(alpha(level) / 2))


def wilson_interval(successes: np.ndarray | int, n: np.ndarray | int,
                    level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval (lo, hi) of ``successes`` out of ``n``; element-wise over arrays."""
    x, n = np.asarray(successes, dtype=np.float64), np.asarray(n, dtype=np.float64)
    if np.any(n < 1) or np.any(x < 0) or np.any(x > n):
        raise ConfigError("a Wilson interval needs 0 <= successes <= n and n >= 1")
    z2 = z_value(level) ** 2
    centre = (x + z2 / 2) / (n + z2)
    half = math.sqrt(z2) / (n + z2) * np.sqrt(x * (n - x) / n + z2 / 4)
    # the limits are exactly 0 at x = 0 and 1 at x = n; in floats they can miss by 1e-16 and leave out the
    # observed 0% / 100% itself
    lo = np.where(x == 0, 0.0, np.clip(centre - half, 0.0, 1.0))
    hi = np.where(x == n, 1.0, np.clip(centre + half, 0.0, 1.0))
    return lo, hi


def mcnemar_z(b: int, c: int) -> float:
    """McNemar's statistic without continuity correction, signed: (b − c) / √(b + c); 0 when b + c = 0."""
    return 0.0 if b + c == 0 else (b - c) / math.sqrt(b + c)


def mcnemar_score_p(b: int, c: int) -> float:
    """Two-sided p-value of McNemar's (score) test: b and c are the two kinds of discordant pairs."""
    return float(2 * norm.sf(abs(mcnemar_z(b, c))))


def tango_statistic(b: int, c: int, n: int, delta0: float) -> float:
    """Tango's score statistic for H0: Δ = ``delta0``, with Δ = (b − c) / n estimated from ``n`` pairs.

    The variance uses the maximum-likelihood P(only B right) under H0 (the root of A x² + B x + C = 0 below,
    Tango 1998 eq. 3); at ``delta0`` = 0 the statistic reduces to ``mcnemar_z``.
    """
    qa = 2.0 * n
    qb = -b - c + (2.0 * n - b + c) * delta0
    qc = -c * delta0 * (1.0 - delta0)
    p21 = (math.sqrt(max(qb * qb - 4 * qa * qc, 0.0)) - qb) / (2 * qa)
    var = n * (2 * p21 + delta0 * (1.0 - delta0))
    diff = b - c - n * delta0
    if var <= 0.0:
        return 0.0 if diff == 0 else math.copysign(math.inf, diff)
    return diff / math.sqrt(var)


@dataclass(frozen=True)
class PairedScore:
    """A paired difference of two accuracies (proportions) with its Tango interval and McNemar p-value."""

    diff: float
    lo: float
    hi: float
    p_value: float

    @property
    def significant(self) -> bool:
        """The interval excludes 0 (the same event as p < 1 − level)."""
        return self.lo > 0.0 or self.hi < 0.0


def paired_score(b: int, c: int, n: int, level: float = LEVEL) -> PairedScore:
    """Tango's interval for Δ and McNemar's p from the discordant counts ``b`` (only A right) and ``c``
    (only B right) among ``n`` pairs.

    Each limit is the root of |T(Δ₀)| = z on the side of 0 that McNemar's |T(0)| vs z decides, so a
    significant test always gets an interval that excludes 0 and a non-significant one never does.
    """
    if min(b, c) < 0 or b + c > n or n < 1:
        raise ConfigError(f"paired counts need 0 <= b, c and b + c <= n >= 1; got b={b}, c={c}, n={n}")
    z = z_value(level)
    t0 = mcnemar_z(b, c)
    diff = (b - c) / n
    edge = 1.0 - 1e-12  # Δ₀ = ±1 makes the variance 0

    def root(target: float, a: float, e: float) -> float:
        fa, fe = tango_statistic(b, c, n, a) - target, tango_statistic(b, c, n, e) - target
        if fa == 0.0:
            return a
        if fa * fe > 0:  # no crossing inside: the limit is the end of the range, Δ = ±1
            return math.copysign(1.0, e)
        return brentq(lambda d: tango_statistic(b, c, n, d) - target, a, e, xtol=1e-13)

    # lower limit: T(Δ₀) = z with Δ₀ < diff; it is > 0 exactly when t0 > z
    lo = root(z, 0.0, diff) if t0 > z else root(z, min(0.0, diff), -edge)
    hi = root(-z, 0.0, diff) if t0 < -z else root(-z, max(0.0, diff), edge)
    if t0 > z:
        lo = max(lo, np.nextafter(0.0, 1.0))  # a root within xtol of 0 still lies above it
    if t0 < -z:
        hi = min(hi, np.nextafter(0.0, -1.0))
    return PairedScore(diff, float(lo), float(hi), mcnemar_score_p(b, c))
