"""The distribution-shift metrics and their intervals, as pure functions of logits, predictions and hits (percent).

- ImageNet-A / -R (the datasets' ``eval.py``): the prediction is the argmax over the logits of the set's 200
  classes only (``output[:, indices_in_1k]``); :func:`topk_within` with ``allowed`` = those indices.
  ``--all-classes`` is the argmax over all 1000, then compared with the label (``allowed=None``).
- ReaL (Beyer et al. 2020): top-k = share of the images with a non-empty label list whose k best predictions
  meet the list; images with an empty list are excluded and counted.
- ImageNet-C (Hendrycks & Dietterich 2019; google-research/augmix ``compute_mce``): per corruption c the
  error E_c = mean over severities 1-5 of (100 − top-1); CE_c = 100 · (E_c / 100) / AlexNet_c with AlexNet's
  error fraction; mCE = mean of CE_c over the 15 benchmark corruptions (only when all 15 were run). Mean
  top-1 = mean over the benchmark corruptions run and their 5 severities.

**Intervals** follow ``ijepa_eval.stats``' choice: a set scored like any test split (V2, -A, -R, -Sketch)
gets ``stats.metric_intervals`` (``shift.run``). Two kinds of number need a resampling of their own, drawn
by ``bootstrap.example_weights`` and stratified by class exactly where ``stats`` would stratify:

- ReaL top-k is a ratio, right / evaluated images, over ImageNet val images. When the val labels are balanced
  by design (50 per class) and at least ``MIN_OUTCOMES`` evaluated images are right and as many wrong: the
  class-stratified percentile bootstrap by val class, in which an image with an empty ReaL list is drawn like
  the others and leaves the denominator. Otherwise Wilson's interval over the evaluated images, as ``stats``
  gives an i.i.d. split.
- ImageNet-C's mean top-1, mCE and per-corruption errors average many (corruption, severity) splits. When
  the splits hold the same images in the same order (the corrupted val images), one draw of images serves
  them all, so their correlation is kept; the draw is class-stratified when those images are balanced by
  design (50 per class per corruption and severity), over all images otherwise. Splits of other images are
  drawn each on its own. An average of correlated proportions has no closed-form score interval, so the
  percentile bootstrap serves at every size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ijepa_eval.bootstrap import RESAMPLES, example_weights, percentile_interval
from ijepa_eval.errors import ConfigError
from ijepa_eval.proportions import LEVEL, wilson_interval
from ijepa_eval.stats import MIN_OUTCOMES, ci_record, test_design

TOPK = 5


def topk_within(logits: np.ndarray, allowed: np.ndarray | None = None, k: int = TOPK) -> np.ndarray:
    """[N, k] class indices (of the full class space), best first, chosen among ``allowed`` (None = all).

    Ties keep the lower class index first (a stable sort), as ``argmax`` does.
    """
    logits = np.asarray(logits)
    cols = np.arange(logits.shape[1]) if allowed is None else np.asarray(allowed, dtype=np.int64)
    if cols.ndim != 1 or len(cols) == 0 or cols.min() < 0 or cols.max() >= logits.shape[1]:
        raise ConfigError(f"allowed classes must index the {logits.shape[1]} logits, got {cols[:5]}...")
    k = min(k, len(cols))
    order = np.argsort(-logits[:, cols], axis=1, kind="stable")[:, :k]
    return cols[order]


def resampled_means(values: np.ndarray, labels: np.ndarray, *, stratified: bool, resamples: int = RESAMPLES,
                    seed: int = 0) -> np.ndarray:
    """[M, resamples] means of the rows of ``values`` [M, N] over bootstrap draws of the N images, one draw
    shared by all rows; ``stratified``: by the images' ``labels`` (``bootstrap.example_weights``)."""
    rng = np.random.default_rng(seed)
    values = np.asarray(values, dtype=np.float64)
    return np.concatenate([values @ w.T for w in example_weights(labels, resamples, rng, stratified=stratified)], 1)


def _interval(samples: np.ndarray, level: float) -> list[float]:
    return [float(v) for v in percentile_interval(samples, level)]


# ----------------------------------------------------------------------------------------------------------
# ReaL

REAL_DRAW = ("ImageNet val images, class-stratified by val label; an image with an empty ReaL list is drawn like "
             "the others and leaves the denominator")


def real_hits(topk: np.ndarray, real: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(evaluated [N], top-1 hit [N], top-k hit [N]) for predictions ``topk`` [N, k] and ReaL lists [N, L] (-1 pad)."""
    topk, real = np.asarray(topk), np.asarray(real)
    if topk.ndim != 2 or real.ndim != 2 or len(topk) != len(real):
        raise ConfigError(f"ReaL needs top-k [N, k] and label lists [N, L]; got {topk.shape} and {real.shape}")
    meets = (topk[:, :, None] == real[:, None, :]) & (real[:, None, :] >= 0)  # [N, k, L]
    return real[:, 0] >= 0, meets[:, 0].any(-1), meets.any((1, 2))


def real_metrics(topk: np.ndarray, real: np.ndarray) -> dict[str, float | int]:
    """ReaL top-1 / top-5 (percent) over the images with labels, and how many images were excluded."""
    evaluated, hit1, hit5 = real_hits(topk, real)
    n = int(evaluated.sum())
    if n == 0:
        raise ConfigError("every image has an empty ReaL label list; nothing to evaluate")
    return {"top1": float(hit1[evaluated].mean() * 100), "top5": float(hit5[evaluated].mean() * 100),
            "n_images": len(real), "n_excluded": len(real) - n, "n_evaluated": n}


def real_intervals(topk: np.ndarray, real: np.ndarray, labels: np.ndarray, *, resamples: int = RESAMPLES,
                   seed: int = 0, level: float = LEVEL) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """({top1, top5: [lo, hi]}, the result's ``ci`` record) of ReaL; ``labels`` [N] are the images' ImageNet
    val labels, the design the images were sampled by (see the module docstring)."""
    evaluated, hit1, hit5 = real_hits(topk, real)
    if len(labels) != len(evaluated):
        raise ConfigError(f"ReaL intervals need one val label per image; got {len(labels)} for {len(evaluated)}")
    n, design = int(evaluated.sum()), test_design(labels)
    ci, method, shares = {}, {}, None
    for row, (metric, hit) in enumerate((("top1", hit1), ("top5", hit5)), start=1):
        k = int(hit.sum())
        if design == "class-balanced" and min(k, n - k) >= MIN_OUTCOMES:
            if shares is None:
                shares = resampled_means(np.stack([evaluated, hit1, hit5]), labels, stratified=True,
                                         resamples=resamples, seed=seed)
            ci[metric], method[metric] = _interval(100 * shares[row] / shares[0], level), "stratified-percentile"
        else:
            ci[metric], method[metric] = [float(v) * 100 for v in wilson_interval(k, n, level)], "wilson"
    extra = {"resampled": REAL_DRAW} if shares is not None else {}
    return ci, ci_record(design, method, level=level, resamples=resamples, seed=seed, **extra)


# ----------------------------------------------------------------------------------------------------------
# ImageNet-C

Hits = Mapping[str, Sequence[np.ndarray]]  # {corruption: one bool [images] per severity}


def _check_hits(hits: Hits) -> None:
    for name, per_severity in hits.items():
        if len(per_severity) == 0 or any(np.ndim(h) != 1 or len(h) == 0 for h in per_severity):
            raise ConfigError(f"hits of corruption '{name}' must be one non-empty [images] row per severity")
    if len({len(h) for h in hits.values()}) > 1:
        raise ConfigError("every corruption needs the same severities")


def _summarise(top1: np.ndarray, names: list[str], alexnet: Mapping[str, float]) -> dict[str, np.ndarray | None]:
    """From top-1 [C, S, ...] (percent): error [C, ...], CE [C, ...] (nan without AlexNet), mean top-1, mCE."""
    error = 100.0 - top1.mean(1)
    norm = np.array([alexnet.get(c, np.nan) for c in names])
    ce = error / norm.reshape((-1,) + (1,) * (error.ndim - 1))
    bench = np.array([c in alexnet for c in names])
    mean_top1 = top1[bench].mean((0, 1)) if bench.any() else None
    mce = ce[bench].mean(0) if set(alexnet) <= set(names) else None
    return {"error": error, "ce": ce, "mean_top1": mean_top1, "mce": mce}


def corruption_metrics(hits: Hits, alexnet: Mapping[str, float]) -> dict:
    """Per-corruption top-1 per severity, error and CE; mean top-1 over the benchmark corruptions run; mCE.

    ``hits``: {corruption: top-1 correctness, one bool row [images] per severity}; ``alexnet``: {corruption:
    error fraction} for the benchmark corruptions (the 4 extra ones have none: no CE, not in the means).
    """
    _check_hits(hits)
    names = list(hits)
    top1 = np.array([[np.mean(h) * 100 for h in hits[c]] for c in names])  # [C, S]
    s = _summarise(top1, names, alexnet)
    return {
        "top1": {c: top1[i].tolist() for i, c in enumerate(names)},
        "error": {c: float(s["error"][i]) for i, c in enumerate(names)},
        "ce": {c: float(s["ce"][i]) for i, c in enumerate(names) if c in alexnet},
        "mean_top1": None if s["mean_top1"] is None else float(s["mean_top1"]),
        "mce": None if s["mce"] is None else float(s["mce"]),
    }


def corruption_intervals(hits: Hits, labels: Hits, alexnet: Mapping[str, float], *, paired: bool = True,
                         resamples: int = RESAMPLES, seed: int = 0,
                         level: float = LEVEL) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """({"mean_top1", "mce", "error/<c>": [lo, hi]}, the result's ``ci`` record) of an ImageNet-C run.

    ``labels`` has ``hits``' shape: each split's image labels. ``paired``: every (corruption, severity) holds
    the same images in the same order, and one draw serves all of them; otherwise each split is drawn on its
    own (seed + its position). Stratified when every split's images are balanced by design.
    """
    _check_hits(hits)
    names = list(hits)
    rows = [(np.asarray(h, dtype=np.float64), np.asarray(y)) for c in names
            for h, y in zip(hits[c], labels[c], strict=True)]
    if any(len(h) != len(y) for h, y in rows):
        raise ConfigError("ImageNet-C intervals need one label per image of every split")
    balanced = all(test_design(y) == "class-balanced" for _, y in rows)
    draw = dict(stratified=balanced, resamples=resamples)
    if paired:
        if any(len(y) != len(rows[0][1]) or not np.array_equal(y, rows[0][1]) for _, y in rows):
            raise ConfigError("paired ImageNet-C intervals need the same images for every corruption and severity")
        top1 = resampled_means(np.stack([h for h, _ in rows]), rows[0][1], seed=seed, **draw)
    else:
        top1 = np.concatenate([resampled_means(h[None], y, seed=seed + j, **draw) for j, (h, y) in enumerate(rows)])
    s = _summarise(100 * top1.reshape(len(names), -1, resamples), names, alexnet)
    out = {f"error/{c}": _interval(s["error"][i], level) for i, c in enumerate(names)}
    method = "stratified-percentile" if balanced else "percentile"
    methods = {}
    for key, metric in (("mean_top1", "top1"), ("mce", "mce")):
        if s[key] is not None:
            out[key], methods[metric] = _interval(s[key], level), method
    images = "class-stratified" if balanced else "all images"
    how = (f"one draw of the images ({images}) shared by every corruption and severity" if paired else
           f"each corruption and severity drawn on its own ({images})")
    return out, ci_record("class-balanced" if balanced else "iid", methods, level=level, resamples=resamples,
                          seed=seed, resampled=how + "; the per-corruption errors from the same draws")
