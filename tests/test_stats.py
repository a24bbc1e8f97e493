"""ijepa_eval.stats against slow reference loops, statsmodels, scipy and published values; predictions files.
Coverage over simulated test sets: test_stats_coverage.py."""

from __future__ import annotations

import statistics

import numpy as np
import pytest
from scipy.optimize import minimize_scalar
from scipy.stats import binom, multinomial, norm
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

from ijepa_eval import stats
from ijepa_eval.bootstrap import binomial_draws, class_stratified_share, example_weights, order_interval
from ijepa_eval.errors import ConfigError, IjepaEvalError
from ijepa_eval.proportions import mcnemar_score_p, paired_score, wilson_interval
from ijepa_eval.results import ResultRecord, load_predictions, write_predictions


def synthetic(n: int, accuracies: list[float], seed: int, top5_rescue: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """labels [n] uniform over len(accuracies) classes; top-5 predictions whose first entry is right with the
    class's accuracy, and which contain the label further down with probability ``top5_rescue`` otherwise."""
    rng = np.random.default_rng(seed)
    c = len(accuracies)
    labels = rng.integers(0, c, n)
    right = rng.random(n) < np.asarray(accuracies)[labels]
    rescued = rng.random(n) < top5_rescue
    top5 = np.empty((n, 5), dtype=np.int64)
    for i, y in enumerate(labels):
        others = [k for k in range(c + 5) if k != y]  # wrong guesses may name classes absent from the test set
        row = rng.permutation(others)[:5]
        if right[i]:
            row[0] = y
        elif rescued[i]:
            row[rng.integers(1, 5)] = y
        top5[i] = row
    return labels, top5


def slow_metrics(labels: np.ndarray, top5: np.ndarray) -> dict[str, float]:
    """One resample's metrics, the obvious way (a Python loop over classes)."""
    n = len(labels)
    top1 = sum(int(top5[i, 0] == labels[i]) for i in range(n)) * 100.0 / n
    top5_acc = sum(int(labels[i] in top5[i]) for i in range(n)) * 100.0 / n
    recalls = []
    for c in sorted(set(labels.tolist())):
        rows = [i for i in range(n) if labels[i] == c]
        recalls.append(sum(int(top5[i, 0] == c) for i in rows) / len(rows))
    return {"top1": top1, "top5": top5_acc, "mean_per_class_acc": 100.0 * sum(recalls) / len(recalls)}


def test_point_metrics_equal_a_slow_loop():
    labels, top5 = synthetic(157, [0.3, 0.5, 0.7, 0.9, 0.6, 0.2, 0.8], seed=1)
    assert stats.point_metrics(labels, top5) == pytest.approx(slow_metrics(labels, top5), abs=1e-10)


@pytest.mark.parametrize("level", [0.95, 0.9])
def test_wilson_interval_matches_statsmodels(level):
    k = np.array([0, 1, 3, 17, 50, 98, 100, 4990])
    n = np.array([10, 20, 3, 40, 100, 100, 100, 5000])
    lo, hi = wilson_interval(k, n, level)
    want = proportion_confint(k, n, alpha=1 - level, method="wilson")
    np.testing.assert_allclose(lo, want[0], atol=1e-12)
    np.testing.assert_allclose(hi, want[1], atol=1e-12)
    with pytest.raises(ConfigError, match="successes <= n"):
        wilson_interval(5, 4)


def test_wilson_interval_holds_an_observed_0_or_100_percent():
    """At k = 0 and k = n the limits are exactly 0 and 1 (float rounding used to give 0.9999999999999999 at
    377 of n = 1 … 2000, so a 100% top-5 lay outside its own interval)."""
    n = np.arange(1, 2001)
    assert (wilson_interval(n, n)[1] == 1.0).all() and (wilson_interval(0 * n, n)[0] == 0.0).all()
    want = proportion_confint(n, n, method="wilson")
    np.testing.assert_allclose(wilson_interval(n, n)[0], want[0], atol=1e-12)


def test_chance_of_balance_is_the_largest_multinomial_probability_of_exact_balance():
    for classes, k in [(2, 10), (4, 5), (8, 10), (3, 2)]:
        balanced = np.full(classes, k)
        uniform = multinomial.pmf(balanced, classes * k, np.full(classes, 1 / classes))
        assert stats.chance_of_balance(classes, k) == pytest.approx(uniform, rel=1e-9)
        skewed = np.random.default_rng(classes).dirichlet(np.ones(classes))
        assert multinomial.pmf(balanced, classes * k, skewed) < uniform
    assert stats.chance_of_balance(1000, 50) == 0.0 and stats.chance_of_balance(2, 10) > 0.17


def balanced_labels(classes, per_class):
    return np.repeat(np.arange(classes), per_class)


def predictions_with(labels, right1, right5):
    """top-2 predictions: the label first where ``right1``, second where ``right5`` only, else other classes."""
    c = labels.max() + 1
    return np.stack([np.where(right1, labels, (labels + 1) % c), np.where(right5 & ~right1, labels, (labels + 2) % c)], 1)


def test_design_is_balanced_only_when_chance_cannot_explain_it():
    assert stats.test_design(balanced_labels(1000, 50)) == "class-balanced"  # ImageNet val
    assert stats.test_design(balanced_labels(8142, 3)) == "class-balanced"  # iNat18 val
    assert stats.test_design(balanced_labels(8, 10)) == "class-balanced"  # chance 1e-6
    assert stats.test_design(balanced_labels(2, 10)) == "iid"  # 17.6% of i.i.d. 20-label sets look like this
    assert stats.test_design(balanced_labels(100, 1)) == "iid"  # one per class: nothing to stratify
    assert stats.test_design(balanced_labels(100, 50)[1:]) == "iid"  # one image dropped
    assert stats.test_design(np.r_[balanced_labels(10, 5), 20, 20, 20, 20, 20]) == "class-balanced"  # ids skip 10–19


def test_metric_intervals_use_the_method_the_design_and_counts_call_for():
    rng = np.random.default_rng(0)
    labels = balanced_labels(40, 50)
    right1 = rng.random(2000) < 0.7
    right5 = right1 | (rng.random(2000) < 0.5)
    ci, record = stats.metric_intervals(labels, predictions_with(labels, right1, right5), seed=5)
    assert record == {"level": 0.95, "design": "class-balanced", "resamples": 1000, "seed": 5,
                      "method": dict.fromkeys(stats.METRICS, "stratified-percentile")}
    assert ci["mean_per_class_acc"] == ci["top1"]  # equal class sizes: the same number
    point = stats.point_metrics(labels, predictions_with(labels, right1, right5))
    assert point["mean_per_class_acc"] == pytest.approx(point["top1"])
    assert all(lo <= point[m] <= hi for m, (lo, hi) in ci.items())
    assert stats.metric_intervals(labels, predictions_with(labels, right1, right5), seed=5)[0] == ci  # seeded

    few_errors = np.ones(2000, bool)
    few_errors[:30] = False  # 30 < 50 wrong: Wilson, conservative on a balanced split
    ci, record = stats.metric_intervals(labels, predictions_with(labels, few_errors, few_errors))
    assert record["design"] == "class-balanced" and set(record["method"].values()) == {"wilson"}
    assert ci["top1"] == pytest.approx([100 * v for v in proportion_confint(1970, 2000, method="wilson")])

    ci, record = stats.metric_intervals(labels[1:], predictions_with(labels[1:], right1[1:], right5[1:]))
    assert record["design"] == "iid"
    assert record["method"] == {"top1": "wilson", "top5": "wilson", "mean_per_class_acc": "stratified-percentile"}
    singleton = np.r_[labels[:100], 99]
    record = stats.metric_intervals(singleton, predictions_with(singleton, right1[:101], right5[:101]))[1]
    assert record["method"]["mean_per_class_acc"] == "percentile"


def slow_stratified(labels, right, resamples, rng):
    """Mean over classes of ``right``'s class mean when every class redraws n_c − 1 of its examples, one
    class at a time."""
    out = []
    classes = np.unique(labels)
    for _ in range(resamples):
        shares = []
        for c in classes:
            members = np.flatnonzero(labels == c)
            shares.append(right[rng.choice(members, len(members) - 1)].mean())
        out.append(np.mean(shares))
    return np.array(out)


def test_class_stratified_bootstrap_matches_a_slow_loop_and_has_an_unbiased_variance():
    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(12), [3, 3, 3, 4, 5, 5, 7, 8, 9, 10, 12, 20])
    right = rng.random(len(labels)) < np.linspace(0.2, 0.9, 12)[labels]
    sizes = np.bincount(labels)
    fast = class_stratified_share(np.bincount(labels, weights=right).astype(int), sizes, 20000, rng)
    slow = slow_stratified(labels, right, 4000, np.random.default_rng(4))
    share = np.bincount(labels, weights=right) / sizes
    # unbiased: redrawing n_c − 1 gives Var = sum p(1 − p)/(n_c − 1) / C², the textbook estimate with s²
    variance = (share * (1 - share) / (sizes - 1)).sum() / 12**2
    assert fast.mean() == pytest.approx(share.mean(), abs=0.003) and slow.mean() == pytest.approx(share.mean(), abs=0.005)
    assert fast.var() == pytest.approx(variance, rel=0.04) and slow.var() == pytest.approx(variance, rel=0.08)
    np.testing.assert_allclose(np.percentile(fast, [2.5, 97.5]), np.percentile(slow, [2.5, 97.5]), atol=0.01)
    with pytest.raises(ConfigError, match="at least 2 examples"):
        class_stratified_share(np.array([1, 0]), np.array([1, 3]), 10, rng)


def test_example_weights_redraw_n_minus_1_per_class_with_the_textbook_variance_or_all_examples():
    """One draw of example weights serves several rows of outcomes: class-stratified, each class keeps its
    share n_c / N over n_c − 1 redrawn examples (the textbook stratified variance); else N redrawn, 1/N each."""
    rng = np.random.default_rng(5)
    labels = np.repeat(np.arange(6), [3, 4, 5, 8, 10, 20])[::-1].copy()  # not sorted: weights follow the examples
    right = rng.random(len(labels)) < np.linspace(0.1, 0.9, 6)[labels]
    n, sizes = len(labels), np.bincount(labels)
    w = np.concatenate(list(example_weights(labels, 20000, rng, stratified=True)))
    assert w.shape == (20000, n) and np.allclose(w.sum(1), 1)
    assert np.allclose(np.stack([w[:, labels == c].sum(1) for c in range(6)], 1), sizes / n)
    drawn = np.rint(w * n * (sizes - 1)[labels] / sizes[labels]).astype(int)  # times each example was drawn
    assert all((drawn[:, labels == c].sum(1) == sizes[c] - 1).all() for c in range(6))
    share = np.bincount(labels, weights=right) / sizes
    variance = ((sizes / n) ** 2 * share * (1 - share) / (sizes - 1)).sum()
    assert (w @ right).mean() == pytest.approx(right.mean(), abs=0.003) and (w @ right).var() == pytest.approx(
        variance, rel=0.04)
    plain = np.concatenate(list(example_weights(labels, 20000, rng, stratified=False)))
    assert np.allclose(plain * n, np.rint(plain * n)) and (plain @ right).var() == pytest.approx(
        right.var() / n, rel=0.04)
    with pytest.raises(ConfigError, match="at least 2 examples"):
        next(example_weights(np.array([0, 1, 1]), 10, rng, stratified=True))


@pytest.mark.parametrize(("trials", "p"), [(0, 0.3), (1, 0.5), (7, 0.0), (7, 1.0), (30, 0.2), (400, 0.97)])
def test_binomial_draws_follow_the_binomial_distribution(trials, p):
    rng = np.random.default_rng(trials)
    draws = binomial_draws(np.array([trials, 3]), np.array([p, 0.5]), 40000, rng)
    assert draws.shape == (2, 40000) and draws.min() >= 0 and draws[0].max() <= trials
    freq = np.bincount(draws[0], minlength=trials + 1) / 40000
    np.testing.assert_allclose(freq, binom.pmf(np.arange(trials + 1), trials, p), atol=0.01)
    np.testing.assert_allclose(np.bincount(draws[1], minlength=4) / 40000, binom.pmf(np.arange(4), 3, 0.5), atol=0.01)


# ------------------------------------------------------------------------------------------ paired tests


def test_mcnemar_score_test_and_tango_interval_match_published_and_statsmodels_values():
    # Cavo et al. (2012) table [[59, 6], [16, 80]]: Fagerland, Lydersen & Laake's contingencytables reports
    # the Tango score interval -0.0621 (-0.1240 to -0.0054)
    s = paired_score(6, 16, 161)
    assert (round(s.diff, 4), round(s.lo, 4), round(s.hi, 4)) == (-0.0621, -0.1240, -0.0054)
    for table in ([[59, 6], [16, 80]], [[300, 20], [5, 100]], [[10, 0], [6, 3]], [[5, 40], [38, 9]]):
        b, c = table[0][1], table[1][0]
        want = mcnemar(table, exact=False, correction=False).pvalue
        assert mcnemar_score_p(b, c) == pytest.approx(want, rel=1e-10)
    assert mcnemar_score_p(0, 0) == 1.0


def brute_force_tango(b, c, n, level=0.95):
    """Score-test inversion from first principles: the restricted MLE by numerical maximisation of the
    multinomial likelihood, the score statistic from its variance, each limit by bisection."""
    z = norm.isf((1 - level) / 2)
    rest = n - b - c

    def statistic(d0):
        def nll(p21):
            p12 = p21 + d0
            return -(b * np.log(max(p12, 1e-300)) + c * np.log(max(p21, 1e-300))
                     + rest * np.log(max(1 - p12 - p21, 1e-300)))
        lo, hi = max(0.0, -d0), (1 - d0) / 2
        p21 = minimize_scalar(nll, bounds=(lo, hi), method="bounded", options={"xatol": 1e-12}).x
        return (b - c - n * d0) / np.sqrt(n * (2 * p21 + d0 * (1 - d0)))

    def bisect(inside, outside):  # |T| <= z at `inside`, > z at `outside`
        for _ in range(40):
            mid = (inside + outside) / 2
            inside, outside = (mid, outside) if abs(statistic(mid)) <= z else (inside, mid)
        return inside

    estimate = (b - c) / n
    return bisect(estimate, -0.9999), bisect(estimate, 0.9999)


@pytest.mark.parametrize(("b", "c", "n"), [(6, 16, 161), (20, 5, 425), (0, 4, 50), (12, 12, 100), (40, 2, 60)])
def test_tango_interval_is_the_inverted_score_test(b, c, n):
    s = paired_score(b, c, n)
    lo, hi = brute_force_tango(b, c, n)
    assert s.lo == pytest.approx(lo, abs=2e-4) and s.hi == pytest.approx(hi, abs=2e-4)
    assert s.lo <= s.diff <= s.hi


def test_interval_excludes_zero_exactly_when_the_test_is_significant():
    rng = np.random.default_rng(20)
    seen = set()
    for _ in range(400):
        n = int(rng.integers(5, 3000))
        discordant = int(rng.integers(0, n + 1) * rng.random())
        b = int(rng.binomial(discordant, rng.uniform(0.2, 0.8)))
        s = paired_score(b, discordant - b, n)
        assert (s.lo > 0 or s.hi < 0) == (s.p_value < 0.05), (b, discordant - b, n, s)
        seen.add(s.significant)
    assert seen == {True, False}
    for trial in range(40):  # the bootstrap test of mean per-class accuracy, on random predictions
        labels, ours = synthetic(60, [0.6, 0.7, 0.8], seed=trial)
        _, ref = synthetic(60, [0.5, 0.6, 0.7], seed=trial)
        t = stats.paired_test(labels, ours, ref, "mean_per_class_acc", resamples=200, seed=trial)
        assert (t.diff_ci[0] > 0 or t.diff_ci[1] < 0) == (t.p_value < 0.05) == t.significant
    x = np.r_[-np.ones(25), np.ones(975)]  # 25 of 1000 resamples <= 0: p = 0.05 exactly, not significant
    assert order_interval(x, 0.95) == (-1.0, 1.0, 0.05)
    assert order_interval(x[1:], 0.95)[0] == 1.0  # 24 of 999: lo > 0 and p = 0.048
    assert order_interval(x[1:], 0.95)[2] == pytest.approx(48 / 999)


def test_score_test_holds_its_level_and_tango_covers_a_large_difference():
    """20000 paired test sets under no difference: McNemar's score test rejects ~5% (Fagerland et al. 2013
    found the asymptotic test close to nominal); 2000 sets with a 10-point difference: Tango's interval
    covers it ~95% (the exact interval conditional on the discordant count, scaled to Δ, covers 86% here)."""
    rng = np.random.default_rng(1)
    null = rng.multinomial(200, [0.05, 0.05, 0.9], size=20000)
    rejected = np.mean([mcnemar_score_p(b, c) < 0.05 for b, c, _ in null])
    assert 0.04 <= rejected <= 0.06, rejected
    tables = rng.multinomial(500, [0.12, 0.02, 0.86], size=2000)
    covered = np.mean([(s := paired_score(b, c, 500)).lo <= 0.10 <= s.hi for b, c, _ in tables])
    assert 0.935 <= covered <= 0.965, covered


def constructed_pair(both: int, only_ours: int, only_ref: int, neither: int):
    """labels and two top-1 predictions with the given 2×2 table of (ours right?, reference right?)."""
    n = both + only_ours + only_ref + neither
    labels = np.arange(n) % 3
    wrong = (labels + 1) % 3
    ours_right = np.r_[np.ones(both + only_ours, bool), np.zeros(only_ref + neither, bool)]
    ref_right = np.r_[np.ones(both, bool), np.zeros(only_ours, bool), np.ones(only_ref, bool), np.zeros(neither, bool)]
    as_topk = lambda right: np.where(right, labels, wrong)[:, None]  # noqa: E731
    return labels, as_topk(ours_right), as_topk(ref_right)


@pytest.mark.parametrize(("only_ours", "only_ref", "verdict"), [(20, 5, "win"), (5, 20, "loss"), (12, 8, "tie")])
def test_paired_test_on_constructed_tables(only_ours, only_ref, verdict):
    labels, ours, ref = constructed_pair(300, only_ours, only_ref, 100)
    t = stats.paired_test(labels, ours, ref, "top1")
    assert (t.n_better, t.n_worse, t.verdict, t.method) == (only_ours, only_ref, verdict, "tango-score")
    table = [[300, only_ours], [only_ref, 100]]
    assert t.p_value == pytest.approx(mcnemar(table, exact=False, correction=False).pvalue, rel=1e-10)
    assert t.diff == pytest.approx(100.0 * (only_ours - only_ref) / len(labels))
    s = paired_score(only_ours, only_ref, len(labels))
    assert t.diff_ci == pytest.approx([100 * s.lo, 100 * s.hi]) and t.diff_ci[0] <= t.diff <= t.diff_ci[1]
    same = stats.paired_test(labels, ours, ours, "top1")
    assert (same.verdict, same.p_value, same.diff) == ("tie", 1.0, 0.0)
    assert same.diff_ci[0] == pytest.approx(-same.diff_ci[1]) and same.diff_ci[1] > 0  # no discordance seen, not none


def test_paired_bootstrap_of_mean_per_class_matches_a_slow_loop():
    labels, ours = synthetic(120, [0.9, 0.8, 0.7], seed=5)
    _, ref = synthetic(120, [0.5, 0.4, 0.6], seed=5)  # same labels (same seed), weaker predictions
    t = stats.paired_test(labels, ours, ref, "mean_per_class_acc", seed=11, resamples=20000)
    per_example = (ours[:, 0] == labels).astype(float) - (ref[:, 0] == labels)  # a mean of differences
    slow = slow_stratified(labels, per_example, 3000, np.random.default_rng(2)) * 100
    np.testing.assert_allclose(t.diff_ci, np.percentile(slow, [2.5, 97.5]), atol=0.8)
    assert t.method == "stratified-paired-percentile" and t.verdict == "win" and t.p_value < 0.05
    assert stats.paired_test(labels, ref, ours, "mean_per_class_acc", seed=11).verdict == "loss"
    one_of_a_class = np.r_[labels, 7]
    t = stats.paired_test(one_of_a_class, np.r_[ours, ours[:1]], np.r_[ref, ref[:1]], "mean_per_class_acc")
    assert t.method == "paired-percentile" and t.verdict == "win"
    balanced = balanced_labels(40, 50)  # mean per-class accuracy is top-1 there, and so is its test
    _, ours = synthetic(2000, [0.7], seed=1)
    assert stats.paired_test(balanced, ours, ours[::-1], "mean_per_class_acc").method == "tango-score"
    with pytest.raises(ConfigError, match="no paired test for metric 'loss'"):
        stats.paired_test(labels, ours[:120], ref, "loss")


def test_holm_matches_statsmodels():
    rng = np.random.default_rng(0)
    for m in (1, 2, 5, 17):
        p = rng.random(m) ** 3
        p[rng.random(m) < 0.2] = 0.04  # ties
        want = multipletests(p, alpha=0.05, method="holm")
        np.testing.assert_allclose(stats.holm(p), want[1], atol=1e-12)
        assert [stats.significant(q) for q in stats.holm(p)] == list(want[0])
    assert stats.holm([]) == []
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])  # by hand: 3p, max(2p, ·), p
    with pytest.raises(ConfigError, match="p-values in"):
        stats.holm([0.2, 1.5])


def test_seed_summary_is_mean_and_sample_std():
    values = [71.2, 70.4, 72.0, 70.9]
    assert stats.seed_summary(values) == pytest.approx({"mean": statistics.mean(values), "std": statistics.stdev(values)})
    with pytest.raises(ConfigError, match="at least 2 runs"):
        stats.seed_summary([70.0])
    with pytest.raises(ConfigError, match=r"labels \[N\] and top-k \[N, k\]"):
        stats.hits(np.zeros(3), np.zeros(3))


def test_widen_by_seeds_adds_the_seed_spread_in_quadrature():
    lo, hi = stats.widen_by_seeds(72.0, [71.0, 72.5], 0.4)
    z = norm.isf(0.025)
    assert lo == pytest.approx(72.0 - np.hypot(1.0, z * 0.4)) and hi == pytest.approx(72.0 + np.hypot(0.5, z * 0.4))
    assert stats.widen_by_seeds(72.0, [71.0, 72.5], 0.0) == (71.0, 72.5)


# ----------------------------------------------------------------------------------- predictions files


def record_with(predictions: dict) -> ResultRecord:
    return ResultRecord(protocol={"name": "x"}, model={}, features={}, dataset={}, metrics={}, selection={},
                        predictions=predictions)


def test_predictions_roundtrip_are_reproducible_and_checked(tmp_path):
    labels, top5 = synthetic(50, [0.5, 0.7], seed=0)
    path = tmp_path / "m__target__p.predictions.npz"
    field = write_predictions(path, labels, top5, np.arange(50) * 2)
    assert field == write_predictions(path, labels, top5, np.arange(50) * 2)  # byte-identical rewrite
    assert field["file"] == path.name and field["format"] == "npz-v1"
    got = load_predictions(record_with(field), tmp_path / "m__target__p.json")
    assert (got.labels == labels).all() and (got.top5 == top5).all() and (got.indices == np.arange(50) * 2).all()
    with np.load(path) as z:  # plain numpy reads it; compact dtypes
        assert (z["labels"].dtype, z["top5"].dtype) == (np.int32, np.int16)
    assert load_predictions(record_with(None), tmp_path / "x.json") is None  # schema-1 results have none

    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # one flipped byte
    path.write_bytes(bytes(data))
    with pytest.raises(IjepaEvalError, match="does not match the sha256 recorded in .*re-run") as err:
        load_predictions(record_with(field), tmp_path / "m__target__p.json")
    assert "\n" not in str(err.value)
    path.unlink()
    with pytest.raises(IjepaEvalError, match="predictions file .* is missing"):
        load_predictions(record_with(field), tmp_path / "m__target__p.json")


def test_predictions_of_many_classes_use_int32(tmp_path):
    top5 = np.array([[40000, 1, 2, 3, 4]])
    field = write_predictions(tmp_path / "p.npz", np.array([40000]), top5, np.array([0]))
    got = load_predictions(record_with(field), tmp_path / "r.json")
    assert got.top5[0, 0] == 40000
    with pytest.raises(IjepaEvalError, match="labels \\[N\\], top5 \\[N, k\\]"):
        write_predictions(tmp_path / "q.npz", np.array([1, 2]), top5, np.array([0]))
