"""Shift metrics against hand computations and the reference code's own formulas."""

import numpy as np
import pytest
import torch

from ijepa_eval.data.imagenet_tables import CORRUPTIONS, alexnet_errors, imagenet1k_wnids, imagenet_a_wnids
from ijepa_eval.errors import ConfigError
from ijepa_eval.shift.metrics import (
    corruption_ci,
    corruption_metrics,
    real_ci,
    real_metrics,
    resample_counts,
    topk_within,
)
from ijepa_eval.stats import bootstrap_ci, resample_indices


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


def test_real_intervals_equal_the_house_bootstrap_when_real_is_one_label():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 10, 300)
    topk = np.stack([np.where(rng.random(300) < 0.6, labels, (labels + 1) % 10)] + [(labels + j) % 10 for j in (2, 3, 4, 5)], 1)
    ci = real_ci(topk, labels[:, None], resamples=200, seed=3)
    house = bootstrap_ci(labels, topk, resamples=200, seed=3)
    assert ci["top1"] == pytest.approx(house["top1"]) and ci["top5"] == pytest.approx(house["top5"])


def test_resample_counts_follow_the_index_stream():
    idx = np.concatenate(list(resample_indices(7, 50, 5)))
    counts = np.concatenate(list(resample_counts(7, 50, 5)))
    assert counts.shape == (50, 7) and (counts.sum(1) == 7).all()
    assert all((np.bincount(row, minlength=7) == c).all() for row, c in zip(idx, counts, strict=True))


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
    ci = corruption_ci(hits, alex, resamples=100)
    assert set(ci) == {"error/fog", "error/spatter", "mean_top1"}


def test_corruption_intervals_are_paired_seeded_and_cover_the_point():
    alex = alexnet_errors()
    rng = np.random.default_rng(0)
    base = rng.random(400)
    hits = {c: np.stack([base < 0.7 - 0.05 * s - 0.01 * i for s in range(5)]) for i, c in enumerate(CORRUPTIONS)}
    m = corruption_metrics(hits, alex)
    ci = corruption_ci(hits, alex, resamples=300, seed=2)
    assert ci == corruption_ci(hits, alex, resamples=300, seed=2)
    assert ci["mce"][0] < m["mce"] < ci["mce"][1] and ci["mean_top1"][0] < m["mean_top1"] < ci["mean_top1"][1]
    # the same images everywhere: pairing keeps the correlation, so the mean's interval is wider than if
    # every corruption and severity were resampled on its own
    apart = corruption_ci(hits, alex, paired=False, resamples=300, seed=2)
    assert np.diff(ci["mean_top1"])[0] > 2 * np.diff(apart["mean_top1"])[0]
    with pytest.raises(ConfigError, match="same images"):
        corruption_ci({"fog": np.ones((5, 3), bool), "snow": np.ones((5, 4), bool)}, alex)
