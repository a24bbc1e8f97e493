"""Figures for results: grouped bars per protocol, the paper's Figure-1-style scatter, a head-grid heatmap.

Uses matplotlib's object API (``Figure``, no pyplot), so no display or global backend state is involved;
each plot is written as PNG and SVG (SVG without a date, so reruns are byte-identical).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ijepa_eval.errors import ConfigError
from ijepa_eval.io import atomic_open
from ijepa_eval.leaderboard.paper import normalize, our_protocols
from ijepa_eval.leaderboard.records import Result
from ijepa_eval.leaderboard.tables import group_models

SCATTER_PROTOCOL = "in1k_1pct"  # Figure 1 plots IN-1k 1% top-1 against pretraining GPU-hours


def save(fig: Figure, stem: str | os.PathLike) -> list[Path]:
    stem = Path(stem)
    stem = stem.with_suffix("") if stem.suffix in (".png", ".svg") else stem
    paths = []
    for ext, extra in (("png", {"dpi": 120}), ("svg", {"metadata": {"Date": None}})):
        path = Path(f"{stem}.{ext}")
        with atomic_open(path, "wb") as f:
            fig.savefig(f, format=ext, bbox_inches="tight", **extra)
        paths.append(path)
    return paths


def bars(values: dict[str, dict[str, float | None]], stem: str | os.PathLike, metric: str = "top1",
         intervals: dict[str, dict[str, tuple[float, float] | None]] | None = None) -> list[Path]:
    """One group per protocol, one bar per model; missing runs are left as gaps. ``intervals`` (model ->
    protocol -> (lo, hi)) draws each bar's 95% interval as an error bar."""
    models = list(values)
    protocols = list(dict.fromkeys(p for v in values.values() for p in v))
    if not models or not protocols:
        raise ConfigError("nothing to plot: no results for the given checkpoints and protocols")
    fig = Figure(figsize=(max(4.0, 1.2 * len(protocols) * max(1, len(models)) ** 0.5 + 2), 3.6))
    ax = fig.add_subplot()
    width = 0.8 / len(models)
    x = np.arange(len(protocols))
    for i, model in enumerate(models):
        heights = [values[model].get(p) for p in protocols]
        xs = [x[j] + (i - (len(models) - 1) / 2) * width for j, h in enumerate(heights) if h is not None]
        hs = [h for h in heights if h is not None]
        cis = [(intervals or {}).get(model, {}).get(p) for p, h in zip(protocols, heights, strict=True) if h is not None]
        # asymmetric error bars: a percentile interval need not be centred on the value
        yerr = np.array([[max(0.0, h - ci[0]), max(0.0, ci[1] - h)] if ci else [0.0, 0.0] for h, ci in zip(hs, cis, strict=True)]).T
        container = ax.bar(xs, hs, width, label=model, yerr=yerr if any(cis) else None, capsize=2,
                           error_kw={"elinewidth": 0.8})
        ax.bar_label(container, fmt="%.1f", fontsize=7, padding=2)
    ax.set_xticks(x, protocols)
    ax.set_ylabel(f"{metric} (%)")
    ax.legend(fontsize=8)
    ax.set_title("Frozen-feature evaluation" + (" (error bars: 95% intervals)" if intervals else ""))
    return save(fig, stem)


def scatter_points(paper: pd.DataFrame, compute: pd.DataFrame, results: list[Result]) -> tuple[list[dict], list[dict]]:
    """(paper points, our points): IN-1% top-1 vs pretraining GPU-hours.

    Paper points: every compute claim with metric gpu_hours whose (method, arch, epochs, data) has a Table 2
    value (relation '<' marks an upper bound). Ours: models whose meta records ``gpu_hours`` (pretraining
    cost; the eval's own ``timings.gpu_hours`` is not pretraining and is not used).
    """
    keys = ("method", "arch", "epochs", "data")
    ref = paper[paper["protocol"] == SCATTER_PROTOCOL]
    theirs = []
    for claim in compute[compute["metric"] == "gpu_hours"].to_dict("records"):
        hit = ref[[all(normalize(k, r[k]) == normalize(k, claim[k]) for k in keys) for r in ref.to_dict("records")]]
        if len(hit):
            theirs.append({"label": f"{claim['method']} {claim['arch']} (paper)", "x": claim["value"],
                           "y": float(hit["value"].iloc[0]), "bound": claim["relation"]})
    ours = []
    for model in group_models(results):
        hours = model.meta.get("gpu_hours")
        choice = model.choose(SCATTER_PROTOCOL, "top1")  # by held-out score, as the Table 2 cell
        if hours is not None and choice is not None:
            r = choice.result
            ours.append({"label": model.display + ("‡" if r.test_selected else ""), "x": float(hours),
                         "y": r.metric("top1"), "bound": "", "ci": r.ci("top1")})
    return theirs, ours


def scatter(paper: pd.DataFrame, compute: pd.DataFrame, results: list[Result], stem: str | os.PathLike) -> list[Path]:
    theirs, ours = scatter_points(paper, compute, results)
    fig = Figure(figsize=(5.5, 4))
    ax = fig.add_subplot()
    for points, style in ((theirs, {"marker": "s", "color": "tab:gray"}), (ours, {"marker": "o", "color": "tab:blue"})):
        for p in points:
            ax.scatter([p["x"]], [p["y"]], s=40, **style)
            if p.get("ci"):  # our 95% interval over test examples
                lo, hi = p["ci"]
                ax.errorbar([p["x"]], [p["y"]], yerr=[[max(0.0, p["y"] - lo)], [max(0.0, hi - p["y"])]],
                            color=style["color"], capsize=2, elinewidth=0.8)
            label = p["label"]
            if p["bound"] == "<":  # the paper gives an upper bound on the hours: a dashed tail to fewer hours
                ax.plot([p["x"] * 0.6, p["x"]], [p["y"], p["y"]], ls="--", color=style["color"])
                label += f" (< {p['x']:g} h)"
            ax.annotate(label, (p["x"], p["y"]), textcoords="offset points", xytext=(-5, 6), ha="right", fontsize=7)
    ax.set_xscale("log")
    ax.margins(x=0.15, y=0.15)
    ax.set_xlabel("pretraining GPU-hours")
    ax.set_ylabel("IN-1k 1% top-1 (%)")
    fig.text(0.01, -0.02, f"ours: best of {', '.join(our_protocols(SCATTER_PROTOCOL))}", fontsize=6)
    ax.set_title("Top-1 vs pretraining compute (paper Fig. 1 style)")
    return save(fig, stem)


def head_grid(result: Result, split: str | None = None, metric: str = "top1") -> tuple[str, str, dict[str, pd.DataFrame]]:
    """(split, lr key, {"representation/head": DataFrame lr × wd of scores}) from a result's ``heads``.

    The linear grid records its learning rate as ``lr_mult`` (multiplier of the recipe's lr) or ``lr``.
    """
    split = split or result.record.selection.get("split")
    heads = result.record.heads
    lr_key = "lr" if any("lr" in h for h in heads) else "lr_mult"
    panels: dict[str, dict[tuple[float, float], float]] = {}
    for h in heads:
        score = (h.get("scores") or {}).get(split, {}).get(metric)
        if score is None or h.get(lr_key) is None or h.get("wd") is None:
            continue
        panels.setdefault(f"{h.get('representation')}/{h.get('head')}", {})[(float(h[lr_key]), float(h["wd"]))] = float(score)
    if not panels:
        if not any(h.get(lr_key) is not None and h.get("wd") is not None for h in heads):  # logreg, kNN, finetune
            kinds = ", ".join(sorted({str(h.get("head")) for h in heads})) or "none"
            raise ConfigError(f"{result.path}: the heatmap draws a linear head grid (lr × wd); this run's heads are "
                              f"{kinds}, which have no lr × wd grid")
        raise ConfigError(f"{result.path} has no heads with {lr_key}, wd and a '{metric}' score on split '{split}'; try --split")
    grids = {name: pd.Series(cells).unstack().sort_index().sort_index(axis=1) for name, cells in sorted(panels.items())}
    return split, lr_key, grids  # index lr, columns wd


def heatmap(result: Result, stem: str | os.PathLike, split: str | None = None, metric: str = "top1") -> list[Path]:
    split, lr_key, grids = head_grid(result, split, metric)
    fig = Figure(figsize=(3.2 * len(grids), 3.2), layout="constrained")
    axes = fig.subplots(1, len(grids), squeeze=False)[0]
    lo = min(float(np.nanmin(g.to_numpy())) for g in grids.values())
    hi = max(float(np.nanmax(g.to_numpy())) for g in grids.values())
    for ax, (name, grid) in zip(axes, grids.items(), strict=True):
        image = ax.imshow(grid.to_numpy(), vmin=lo, vmax=hi, cmap="viridis", aspect="auto")
        ax.set_xticks(range(grid.shape[1]), [f"{w:g}" for w in grid.columns])
        ax.set_yticks(range(grid.shape[0]), [f"{lr:g}" for lr in grid.index])
        for (i, j), v in np.ndenumerate(grid.to_numpy()):
            if not np.isnan(v):
                ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=7, color="w")
        ax.set_xlabel("wd")
        if ax is axes[0]:
            ax.set_ylabel(lr_key)
        ax.set_title(name, fontsize=9)
    fig.colorbar(image, ax=list(axes), label=f"{metric} on {split} (%)")
    fig.suptitle(f"{result.label} · {result.protocol}", fontsize=10)
    return save(fig, stem)


def _per_model(results: list[Result], protocols: Sequence[str] | None, get: Callable[[Result], Any]) -> dict[str, dict[str, Any]]:
    """model -> protocol -> ``get(result)`` over ``protocols`` (all found when None); None where there is no run."""
    models = group_models(results)
    protocols = protocols or sorted({p for m in models for p in m.by_protocol})
    return {m.display: {p: (get(m.by_protocol[p]) if p in m.by_protocol else None) for p in protocols} for m in models}


def bar_values(results: list[Result], protocols: Sequence[str] | None, metric: str = "top1") -> dict[str, dict[str, float | None]]:
    """Per-model values over ``protocols`` (all found when None) for ``bars``."""
    return _per_model(results, protocols, lambda r: r.metric(metric))


def bar_intervals(results: list[Result], protocols: Sequence[str] | None,
                  metric: str = "top1") -> dict[str, dict[str, tuple[float, float] | None]]:
    """The 95% intervals beside ``bar_values`` (None where a result has none), for ``bars``' error bars."""
    return _per_model(results, protocols, lambda r: r.ci(metric))
