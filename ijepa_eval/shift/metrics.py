"""The distribution-shift metrics as pure functions of logits, predictions and per-image hits (percent).

- ImageNet-A / -R (the datasets' ``eval.py``): the prediction is the argmax over the logits of the set's 200
  classes only (``output[:, indices_in_1k]``); :func:`topk_within` with ``allowed`` = those indices.
  ``--all-classes`` is the argmax over all 1000, then compared with the label (``allowed=None``).
- ReaL (Beyer et al. 2020): top-k = share of the images with a non-empty label list whose k best predictions
  meet the list; images with an empty list are excluded and counted.
- ImageNet-C (Hendrycks & Dietterich 2019; google-research/augmix ``compute_mce``): per corruption c the
  error E_c = mean over severities 1-5 of (100 − top-1); CE_c = 100 · (E_c / 100) / AlexNet_c with AlexNet's
  error fraction; mCE = mean of CE_c over the 15 benchmark corruptions (only when all 15 were run). Mean
  top-1 = mean over the benchmark corruptions run and their 5 severities.

Intervals are percentile bootstraps over test images like ``ijepa_eval.stats`` (same resample stream:
``default_rng(seed).integers(0, n, n)`` per resample); a resample is kept as per-image counts, so every
metric is a matrix product. ImageNet-C's resamples are *paired*: the same images (the ImageNet val images,
corrupted) are drawn for every corruption and severity when they are the same files.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np

from ijepa_eval.errors import ConfigError
from ijepa_eval.stats import LEVEL, RESAMPLES, interval, resample_indices

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


def resample_counts(n: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """[b, n] multiplicities of each image in each bootstrap resample, in chunks (``stats``' index stream)."""
    for idx in resample_indices(n, resamples, seed):
        b = idx.shape[0]
        yield np.bincount((idx + n * np.arange(b)[:, None]).ravel(), minlength=b * n).reshape(b, n)


def _bootstrap_means(hits: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """[M, resamples] percent means of the rows of ``hits`` [M, n] over each resample of its n columns."""
    hits = np.asarray(hits, dtype=np.float64)
    parts = [hits @ counts.T * (100.0 / hits.shape[1]) for counts in resample_counts(hits.shape[1], resamples, seed)]
    return np.concatenate(parts, axis=1)


# ----------------------------------------------------------------------------------------------------------
# ReaL


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


def real_ci(topk: np.ndarray, real: np.ndarray, *, resamples: int = RESAMPLES, seed: int = 0,
            level: float = LEVEL) -> dict[str, list[float]]:
    """Percentile bootstrap intervals of ReaL top-1 / top-5, resampling the evaluated images."""
    evaluated, hit1, hit5 = real_hits(topk, real)
    dist = _bootstrap_means(np.stack([hit1[evaluated], hit5[evaluated]]), resamples, seed)
    return {"top1": interval(dist[0], level), "top5": interval(dist[1], level)}


# ----------------------------------------------------------------------------------------------------------
# ImageNet-C


def _check_hits(hits: Mapping[str, np.ndarray]) -> None:
    for name, h in hits.items():
        if np.asarray(h).ndim != 2 or len(h) == 0 or np.asarray(h).shape[1] == 0:
            raise ConfigError(f"hits of corruption '{name}' must be [severities, images], got {np.shape(h)}")


def _summarise(top1: np.ndarray, names: list[str], alexnet: Mapping[str, float]) -> dict[str, np.ndarray | None]:
    """From top-1 [C, S, ...] (percent): error [C, ...], CE [C, ...] (nan without AlexNet), mean top-1, mCE."""
    error = 100.0 - top1.mean(1)
    norm = np.array([alexnet.get(c, np.nan) for c in names])
    ce = error / norm.reshape((-1,) + (1,) * (error.ndim - 1))
    bench = np.array([c in alexnet for c in names])
    mean_top1 = top1[bench].mean((0, 1)) if bench.any() else None
    mce = ce[bench].mean(0) if set(alexnet) <= set(names) else None
    return {"error": error, "ce": ce, "mean_top1": mean_top1, "mce": mce}


def corruption_metrics(hits: Mapping[str, np.ndarray], alexnet: Mapping[str, float]) -> dict:
    """Per-corruption top-1 per severity, error and CE; mean top-1 over the benchmark corruptions run; mCE.

    ``hits``: {corruption: bool [severities, images]} top-1 correctness; ``alexnet``: {corruption: error
    fraction} for the benchmark corruptions (the 4 extra ones have none: no CE, not in the means).
    """
    _check_hits(hits)
    names = list(hits)
    top1 = np.stack([np.asarray(hits[c], dtype=np.float64).mean(1) * 100 for c in names])  # [C, S]
    s = _summarise(top1, names, alexnet)
    return {
        "top1": {c: top1[i].tolist() for i, c in enumerate(names)},
        "error": {c: float(s["error"][i]) for i, c in enumerate(names)},
        "ce": {c: float(s["ce"][i]) for i, c in enumerate(names) if c in alexnet},
        "mean_top1": None if s["mean_top1"] is None else float(s["mean_top1"]),
        "mce": None if s["mce"] is None else float(s["mce"]),
    }


def corruption_ci(hits: Mapping[str, np.ndarray], alexnet: Mapping[str, float], *, paired: bool = True,
                  resamples: int = RESAMPLES, seed: int = 0, level: float = LEVEL) -> dict[str, list[float]]:
    """Bootstrap intervals of mean top-1, mCE and every corruption's error ({"error/<c>": [lo, hi], ...}).

    ``paired``: every (corruption, severity) holds the same images in the same order, so one resample of
    image indices serves all of them. Otherwise each (corruption, severity) is resampled on its own
    (seed + its position), which ignores the correlation between them.
    """
    _check_hits(hits)
    names = list(hits)
    rows = [np.asarray(h[s], dtype=np.float64) for h in hits.values() for s in range(len(h))]
    if paired:
        if len({len(r) for r in rows}) != 1:
            raise ConfigError("paired ImageNet-C intervals need the same images for every corruption and severity")
        dist = _bootstrap_means(np.stack(rows), resamples, seed)
    else:
        dist = np.concatenate([_bootstrap_means(r[None], resamples, seed + j) for j, r in enumerate(rows)])
    top1 = dist.reshape(len(names), -1, dist.shape[1])  # [C, S, resamples]
    s = _summarise(top1, names, alexnet)
    out = {f"error/{c}": interval(s["error"][i], level) for i, c in enumerate(names)}
    for key in ("mean_top1", "mce"):
        if s[key] is not None:
            out[key] = interval(s[key], level)
    return out
