"""Shift metrics against hand computations and the reference code's own formulas; their intervals against
statsmodels and the textbook variance of the design they resample."""

import numpy as np
import pytest
import torch
from scipy.stats import norm
from statsmodels.stats.proportion import proportion_confint

from ijepa_eval.data.imagenet_tables import CORRUPTIONS, alexnet_errors, imagenet1k_wnids, imagenet_a_wnids
from ijepa_eval.errors import ConfigError
from ijepa_eval.shift.metrics import (
    corruption_intervals,
    corruption_metrics,
    real_intervals,
    real_metrics,
    resampled_means,
    topk_within,
)

Z = norm.isf(0.025)


def test_masked_argmax_by_hand():
    logits = np.array([[9.0, 1, 0, 2, 3, 0],
                       [0.0, 5, 0, 5, 1, 7],
                       [1.0, 0, 0, 0, 0, 0]])
    allowed = np.array([1, 3, 4])
    # row 0: best of classes 1, 3, 4 is 4 (3.0) although class 0 wins overall; row 1: a tie 1 = 3 keeps 1
    assert topk_within(logits, allowed, k=3).tolist() == [[4, 3, 1], [1, 3, 4], [1, 3, 4]]
    assert topk_within(logits, None, k=2).tolist() == [[0, 4], [5, 1], [0, 1]]
    labels = np.array([4, 3, 0])
    masked = (topk_within(logits, allowed, 1)[:, 0] == labels).mean() * 100  # default: the 200-class argmax
    everything = (topk_within(logits, None, 1)[:, 0] == labels).mean() * 100  # --all-classes
    assert (masked, everything) == (pytest.approx(100 / 3), pytest.approx(100 / 3))
    assert topk_within(logits, allowed, 1)[:, 0].tolist() == [4, 1, 1]
    assert topk_within(logits, None, 1)[:, 0].tolist() == [0, 5, 0]
    with pytest.raises(ConfigError):
        topk_within(logits, np.array([6]))


def test_masked_accuracy_equals_imagenet_a_eval_py():
    """natural-adv-examples eval.py: pred = net(x)[:, indices_in_1k].max(1)[1] vs the 200-class target."""
    classes = list(imagenet1k_wnids())
    indices = np.array(sorted(classes.index(w) for w in imagenet_a_wnids()))
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2000, 1000, generator=g)
    logits[:, indices] -= 0.5  # so that masking matters: the global argmax is often outside the 200
    labels = indices[torch.randint(0, 200, (2000,), generator=g).numpy()]
    target_200 = np.searchsorted(indices, labels)
    pred_200 = logits[:, torch.as_tensor(indices)].max(1)[1].numpy()
    reference = (pred_200 == target_200).mean()
    ours = topk_within(logits.numpy(), indices, k=5)
    assert (ours[:, 0] == labels).mean() == reference
    assert np.isin(ours, indices).all()
    assert (topk_within(logits.numpy(), None, 1)[:, 0] == labels).mean() < reference


def test_real_top1_top5_with_exclusions_by_hand():
    topk = np.array([[3, 1, 2, 4, 5], [0, 1, 2, 3, 4], [7, 0, 1, 2, 3], [8, 2, 1, 0, 4], [6, 0, 1, 2, 3]])
    real = np.array([[3, -1], [4, 9], [-1, -1], [9, -1], [6, 1]])
    m = real_metrics(topk, real)
    # evaluated: images 0, 1, 3, 4; top-1 hits 0 and 4; top-5 hits 0, 1 (4 is 5th) and 4
    assert m == {"top1": 50.0, "top5": 75.0, "n_images": 5, "n_excluded": 1, "n_evaluated": 4}
    # the reference README's NumPy example (top-1): mean of [pred in labels for images with labels]
    lists = [[c for c in row if c >= 0] for row in real.tolist()]
    readme = np.mean([p in lists[i] for i, p in enumerate(topk[:, 0]) if lists[i]]) * 100
    assert m["top1"] == readme


def stratified_se(values: np.ndarray, labels: np.ndarray) -> float:
    """Standard error of the mean of ``values`` under stratified sampling by ``labels`` (the textbook estimate
    sum_c (n_c / N)^2 s_c^2 / n_c, s_c^2 with ddof 1), which the n_c − 1 bootstrap reproduces."""
    return float(np.sqrt(sum((labels == c).mean() ** 2 * values[labels == c].var(ddof=1) / (labels == c).sum()
                             for c in np.unique(labels))))


def real_case(per_class: int, classes: int = 40, empty: float = 0.1, seed: int = 0):
    """Val labels [N] (``per_class`` each), top-5 [N, 5] and ReaL lists [N, 2] with some empty lists; class
    accuracies from 5% to 95%, so that stratifying by class matters."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes), per_class)
    n = len(labels)
    right = rng.random(n) < np.linspace(0.05, 0.95, classes)[labels]
    top1 = np.where(right, labels, (labels + 1) % classes)
    topk = np.stack([top1, *[(labels + j) % classes for j in (2, 3, 4, 5)]], 1)
    real = np.stack([labels, np.where(rng.random(n) < 0.2, (labels + 2) % classes, -1)], 1)
    real[rng.random(n) < empty] = -1  # ReaL excludes these images
    return labels, topk, real


def test_real_on_a_balanced_val_split_is_a_stratified_ratio_bootstrap_with_the_textbook_variance():
    labels, topk, real = real_case(per_class=10)
    value = real_metrics(topk, real)["top1"]
    ci, record = real_intervals(topk, real, labels, resamples=20000, seed=1)
    assert record["design"] == "class-balanced" and record["method"]["top1"] == "stratified-percentile"
    assert "empty ReaL list" in record["resampled"] and record["resamples"] == 20000
    # delta method for the ratio R = sum(e h) / sum(e) under stratified sampling: z_i = e_i (h_i - R) / mean(e)
    evaluated = real[:, 0] >= 0
    hit = (topk[:, 0] == real[:, 0]) | (topk[:, 0] == real[:, 1]) & (real[:, 1] >= 0)
    z = evaluated * (hit - value / 100) / evaluated.mean()
    half = Z * stratified_se(z, labels) * 100
    assert ci["top1"][0] == pytest.approx(value - half, abs=0.06 * half)
    assert ci["top1"][1] == pytest.approx(value + half, abs=0.06 * half)
    # the draws are shared: excluded images leave the denominator, resample by resample
    shares = resampled_means(np.stack([evaluated, hit & evaluated]), labels, stratified=True, resamples=50, seed=2)
    assert (shares[1] <= shares[0]).all() and np.allclose(shares.shape, (2, 50))


def test_real_falls_back_to_wilson_over_the_evaluated_images_like_stats():
    # an i.i.d. val split (unequal classes): Wilson over the evaluated images, as statsmodels computes it
    labels, topk, real = real_case(per_class=10)
    labels = labels.copy()
    labels[:7] = 39
    ci, record = real_intervals(topk, real, labels)
    evaluated, m = real[:, 0] >= 0, real_metrics(topk, real)
    k = round(m["top1"] * m["n_evaluated"] / 100)
    assert record["design"] == "iid" and record["method"] == {"top1": "wilson", "top5": "wilson"}
    assert "resampled" not in record
    assert ci["top1"] == pytest.approx([100 * v for v in proportion_confint(k, int(evaluated.sum()), method="wilson")])
    # balanced, but top-5 has fewer than 50 wrong images: Wilson for it, the bootstrap for top-1
    labels, topk, real = real_case(per_class=10)
    topk[:, 1] = real[:, 0]
    ci, record = real_intervals(topk, real, labels, resamples=200)
    assert record["method"] == {"top1": "stratified-percentile", "top5": "wilson"} and ci["top5"][1] == 100.0
    with pytest.raises(ConfigError, match="one val label per image"):
        real_intervals(topk, real, labels[:-1])


def hits_with_accuracy(acc_percent: list[float], n: int = 200) -> np.ndarray:
    """[severities, n] correctness with exactly the given top-1 (percent) per severity."""
    return np.stack([np.arange(n) < round(a * n / 100) for a in acc_percent])


def test_mce_is_100_when_every_error_equals_alexnets():
    alex = alexnet_errors()
    hits = {c: hits_with_accuracy([100 * (1 - alex[c])] * 5, n=1000) for c in CORRUPTIONS}
    m = corruption_metrics(hits, alex)
    assert m["mce"] == pytest.approx(100.0, abs=0.06)  # accuracies rounded to 1/1000


def test_mce_and_mean_top1_by_hand_and_by_augmix_compute_mce():
    alex = alexnet_errors()
    accs = {c: [40.0 + i + 5 * s for s in range(5)] for i, c in enumerate(CORRUPTIONS)}  # top-1 per severity
    hits = {c: hits_with_accuracy(a) for c, a in accs.items()}
    m = corruption_metrics(hits, alex)
    # by hand: E_c = 100 - mean(acc) = 100 - (40 + i + 10) = 50 - i; CE_c = E_c / AlexNet_c
    for i, c in enumerate(CORRUPTIONS):
        assert m["error"][c] == pytest.approx(50.0 - i)
        assert m["ce"][c] == pytest.approx((50.0 - i) / alex[c])
        assert m["top1"][c] == pytest.approx(accs[c])
    assert m["mean_top1"] == pytest.approx(np.mean([40 + i + 10 for i in range(15)]))
    # augmix imagenet.py compute_mce, with accuracies as fractions
    augmix = sum(100 * (1 - np.mean(np.array(accs[c]) / 100)) / alex[c] / 15 for c in CORRUPTIONS)
    assert m["mce"] == pytest.approx(augmix)


def test_extra_and_partial_corruption_sets():
    alex = alexnet_errors()
    hits = {"fog": hits_with_accuracy([60, 50, 40, 30, 20]), "spatter": hits_with_accuracy([90] * 5)}
    m = corruption_metrics(hits, alex)
    assert m["mce"] is None  # mCE is defined over all 15 benchmark corruptions only
    assert m["ce"] == {"fog": pytest.approx(60.0 / alex["fog"])} and m["error"]["spatter"] == pytest.approx(10.0)
    assert m["mean_top1"] == pytest.approx(40.0)  # the extra corruption stays out of the mean
    labels = {c: [np.arange(200) % 4] * 5 for c in hits}
    ci, record = corruption_intervals(hits, labels, alex, resamples=100)
    assert set(ci) == {"error/fog", "error/spatter", "mean_top1"} and set(record["method"]) == {"top1"}


def corrupted(labels: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """15 corruptions x 5 severities of the same images: an image's difficulty is shared by all of them."""
    rng = np.random.default_rng(seed)
    base = 0.6 * rng.random(len(labels)) + 0.4 * labels / labels.max()  # classes differ: stratifying matters
    return {c: np.stack([base < 0.8 - 0.08 * s - 0.01 * i for s in range(5)]) for i, c in enumerate(CORRUPTIONS)}


@pytest.mark.parametrize("per_class", [10, 0])
def test_corruption_intervals_share_one_draw_stratified_as_stats_would(per_class):
    """One draw of the images for all 75 splits; class-stratified on a balanced set (10 per class here, 50 in
    ImageNet-C), over all images otherwise. The bootstrap SD of mean top-1 and mCE equals the textbook
    (stratified) standard error of each image's contribution — an independent computation."""
    alex = alexnet_errors()
    labels = np.repeat(np.arange(40), 10) if per_class else np.random.default_rng(5).integers(0, 40, 400)
    hits = corrupted(labels)
    split_labels = {c: [labels] * 5 for c in hits}
    m = corruption_metrics(hits, alex)
    ci, record = corruption_intervals(hits, split_labels, alex, resamples=20000, seed=2)
    method = "stratified-percentile" if per_class else "percentile"
    assert record["method"] == {"top1": method, "mce": method}
    assert record["design"] == ("class-balanced" if per_class else "iid") and "one draw" in record["resampled"]
    # per image: its mean top-1 over the 75 splits, and its share of mCE (both linear in the hits)
    per_image_top1 = 100 * np.mean([h.mean(0) for h in hits.values()], 0)
    per_image_mce = np.mean([100 * (1 - h.mean(0)) / alex[c] for c, h in hits.items()], 0)
    for key, y, point in (("mean_top1", per_image_top1, m["mean_top1"]), ("mce", per_image_mce, m["mce"])):
        se = stratified_se(y, labels) if per_class else y.std() / np.sqrt(len(y))  # ddof 0: the plain bootstrap's
        assert point == pytest.approx(y.mean())
        assert ci[key] == pytest.approx([point - Z * se, point + Z * se], abs=0.05 * Z * se)
    assert ci == corruption_intervals(hits, split_labels, alex, resamples=20000, seed=2)[0]  # seeded


def test_pairing_keeps_the_correlation_between_corruptions():
    alex = alexnet_errors()
    labels = np.repeat(np.arange(40), 10)
    hits, split_labels = corrupted(labels), {c: [labels] * 5 for c in CORRUPTIONS}
    m = corruption_metrics(hits, alex)
    ci, _ = corruption_intervals(hits, split_labels, alex, resamples=300, seed=2)
    assert ci["mce"][0] < m["mce"] < ci["mce"][1] and ci["mean_top1"][0] < m["mean_top1"] < ci["mean_top1"][1]
    # every corruption and severity resampled on its own ignores that they share images: far too narrow
    apart, record = corruption_intervals(hits, split_labels, alex, paired=False, resamples=300, seed=2)
    assert np.diff(ci["mean_top1"])[0] > 2 * np.diff(apart["mean_top1"])[0] and "on its own" in record["resampled"]
    with pytest.raises(ConfigError, match="same images"):
        corruption_intervals({"fog": np.ones((5, 3), bool), "snow": np.ones((5, 4), bool)},
                             {"fog": [np.arange(3)] * 5, "snow": [np.arange(4)] * 5}, alex)
    with pytest.raises(ConfigError, match="same images"):  # same size, other images (labels differ)
        corruption_intervals({"fog": np.ones((5, 4), bool), "snow": np.ones((5, 4), bool)},
                             {"fog": [np.arange(4)] * 5, "snow": [np.arange(4)[::-1]] * 5}, alex)
