"""ijepa_eval.stats against slow reference loops, scipy's binomial test and known coverage; predictions files."""

from __future__ import annotations

import statistics

import numpy as np
import pytest
from scipy.stats import binomtest

from ijepa_eval import stats
from ijepa_eval.errors import ConfigError, IjepaEvalError
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


def slow_bootstrap(labels, top5, resamples, seed):
    rng = np.random.default_rng(seed)
    out = {m: [] for m in stats.METRICS}
    for _ in range(resamples):
        idx = rng.integers(0, len(labels), len(labels))
        for m, v in slow_metrics(labels[idx], top5[idx]).items():
            out[m].append(v)
    return {m: np.array(v) for m, v in out.items()}


def test_bootstrap_equals_a_slow_loop_with_the_same_seed(monkeypatch):
    labels, top5 = synthetic(157, [0.3, 0.5, 0.7, 0.9, 0.6, 0.2, 0.8], seed=1)
    slow = slow_bootstrap(labels, top5, 1000, seed=3)
    monkeypatch.setattr(stats, "CHUNK_ELEMENTS", 1000)  # several chunks: the random stream must not change
    fast = stats.bootstrap_distribution(labels, top5, resamples=1000, seed=3)
    np.testing.assert_array_equal(fast["top1"], slow["top1"])
    np.testing.assert_array_equal(fast["top5"], slow["top5"])
    np.testing.assert_allclose(fast["mean_per_class_acc"], slow["mean_per_class_acc"], rtol=0, atol=1e-10)
    ci = stats.bootstrap_ci(labels, top5, resamples=1000, seed=3)
    for m in stats.METRICS:
        np.testing.assert_allclose(ci[m], np.percentile(slow[m], [2.5, 97.5]), rtol=0, atol=1e-10)
    assert stats.point_metrics(labels, top5) == pytest.approx(slow_metrics(labels, top5), abs=1e-10)
    assert stats.bootstrap_ci(labels, top5, resamples=1000, seed=4) != ci  # the seed matters


def test_bootstrap_intervals_cover_the_true_value_95_percent_of_the_time():
    """200 test sets drawn from a known population: a 95% interval must contain the truth ~95% of the time
    (±3 binomial standard errors), a 68% interval only ~68% of the time."""
    accuracies = [0.5, 0.6, 0.8, 0.9]  # balanced classes: top-1 = mean per-class = 70%, top-5 = 70 + 30·0.5 = 85%
    truth = {"top1": 70.0, "top5": 85.0, "mean_per_class_acc": 70.0}
    covered = {level: dict.fromkeys(truth, 0) for level in (0.95, 0.68)}
    trials = 200
    for t in range(trials):
        labels, top5 = synthetic(400, accuracies, seed=100 + t)
        dist = stats.bootstrap_distribution(labels, top5, resamples=1000, seed=t)
        for level, hits in covered.items():
            for m, v in truth.items():
                lo, hi = stats.interval(dist[m], level)
                hits[m] += lo <= v <= hi
    for m in truth:
        assert 0.90 <= covered[0.95][m] / trials <= 0.99, (m, covered[0.95][m])
        assert 0.58 <= covered[0.68][m] / trials <= 0.78, (m, covered[0.68][m])


def test_bootstrap_of_50k_examples_takes_seconds():
    import time

    labels, top5 = np.random.default_rng(0).integers(0, 1000, 50_000), np.random.default_rng(1).integers(0, 1000, (50_000, 5))
    started = time.perf_counter()
    ci = stats.bootstrap_ci(labels, top5)
    assert time.perf_counter() - started < 10 and set(ci) == set(stats.METRICS)


@pytest.mark.parametrize(("n01", "n10"), [(0, 6), (1, 5), (3, 3), (7, 20), (40, 61), (0, 0), (250, 190)])
def test_mcnemar_matches_scipy_binomtest(n01, n10):
    expected = 1.0 if n01 + n10 == 0 else binomtest(n01, n01 + n10, 0.5).pvalue
    assert stats.mcnemar_exact(n01, n10) == pytest.approx(expected, rel=1e-12)
    assert stats.mcnemar_exact(0, 6) == pytest.approx(2 * 0.5**6)  # by hand: both tails of Binomial(6, 1/2)
    assert stats.mcnemar_exact(1, 5) == pytest.approx(2 * 7 / 64)


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
    assert (t.n_better, t.n_worse, t.verdict) == (only_ours, only_ref, verdict)
    assert t.p_value == pytest.approx(binomtest(only_ours, only_ours + only_ref, 0.5).pvalue, rel=1e-12)
    assert t.diff == pytest.approx(100.0 * (only_ours - only_ref) / len(labels))
    assert t.diff_ci[0] <= t.diff <= t.diff_ci[1]
    same = stats.paired_test(labels, ours, ours, "top1")
    assert (same.verdict, same.p_value, same.diff, same.diff_ci) == ("tie", 1.0, 0.0, [0.0, 0.0])


def test_paired_bootstrap_of_mean_per_class_equals_a_slow_loop():
    labels, ours = synthetic(120, [0.9, 0.8, 0.7], seed=5)
    _, ref = synthetic(120, [0.5, 0.4, 0.6], seed=5)  # same labels (same seed), weaker predictions
    rng = np.random.default_rng(11)
    diffs = []
    for _ in range(1000):
        idx = rng.integers(0, 120, 120)
        diffs.append(slow_metrics(labels[idx], ours[idx])["mean_per_class_acc"]
                     - slow_metrics(labels[idx], ref[idx])["mean_per_class_acc"])
    t = stats.paired_test(labels, ours, ref, "mean_per_class_acc", seed=11)
    np.testing.assert_allclose(t.diff_ci, np.percentile(diffs, [2.5, 97.5]), atol=1e-10)
    assert t.p_value is None and t.verdict == "win"
    assert stats.paired_test(labels, ref, ours, "mean_per_class_acc", seed=11).verdict == "loss"
    with pytest.raises(ConfigError, match="no paired test for metric 'loss'"):
        stats.paired_test(labels, ours, ref, "loss")


def test_seed_summary_is_mean_and_sample_std():
    values = [71.2, 70.4, 72.0, 70.9]
    assert stats.seed_summary(values) == pytest.approx({"mean": statistics.mean(values), "std": statistics.stdev(values)})
    with pytest.raises(ConfigError, match="at least 2 runs"):
        stats.seed_summary([70.0])
    with pytest.raises(ConfigError, match=r"labels \[N\] and top-k \[N, k\]"):
        stats.hits(np.zeros(3), np.zeros(3))


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
