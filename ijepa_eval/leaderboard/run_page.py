"""What one run's page (``pages/<run>.html``) shows: metrics, recipe, head-grid heatmap, every head, metadata.

Data only, built from one result JSON; ``html`` renders it through ``templates/run.html``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import matplotlib
import yaml

from ijepa_eval.errors import ConfigError
from ijepa_eval.leaderboard import plots
from ijepa_eval.leaderboard.cells import TEST_SELECTED_LEGEND
from ijepa_eval.leaderboard.html_table import Cell, Column, Row, Table, metric_cell
from ijepa_eval.leaderboard.records import Result
from ijepa_eval.leaderboard.render import MISSING


def _text(value: Any) -> str:
    if value is None:
        return MISSING
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def _items(d: dict[str, Any] | None) -> list[tuple[str, str]]:
    return [(str(k), _text(v)) for k, v in (d or {}).items()]


def heads_table(r: Result) -> Table:
    """Every head of the grid with its hyper-parameters and scores; the selected one marked."""
    heads = r.record.heads
    metric = r.record.selection.get("metric") or "top1"
    params = list(dict.fromkeys(k for h in heads for k in h if k not in ("name", "representation", "head", "scores")))
    splits = list(dict.fromkeys(s for h in heads for s in (h.get("scores") or {})))
    columns = [Column("selected"), Column("name"), Column("representation"), Column("head"),
               *(Column(p, numeric=True) for p in params), *(Column(f"{s} {metric}", numeric=True) for s in splits)]
    chosen = r.record.selection.get("head")
    rows = []
    for h in heads:
        numbers = [h.get(p) for p in params] + [(h.get("scores") or {}).get(s, {}).get(metric) for s in splits]
        cells = [Cell("✓" if h.get("name") == chosen else ""), Cell(_text(h.get("name"))),
                 Cell(_text(h.get("representation"))), Cell(_text(h.get("head")))]
        for i, v in enumerate(numbers):
            number = v if isinstance(v, int | float) and not isinstance(v, bool) else None
            text = _text(v) if number is None else f"{v:g}" if i < len(params) else f"{v:.1f}"
            cells.append(Cell(text, number, "num"))
        rows.append(Row(cells))
    return Table("heads", columns, rows, note=f"{metric} (%) of every head on each split")


@dataclass
class HeatPanel:
    """One representation/head of the lr × wd grid (``plots.head_grid``) as a coloured HTML table."""

    name: str
    caption: str
    lr_key: str
    wds: list[str]
    rows: list[tuple[str, list[Cell]]]  # (lr, one cell per wd)


def heat_panels(r: Result) -> list[HeatPanel]:
    """The head-grid heatmap as HTML tables (viridis over all panels, like ``plot heatmap``; the selected head
    outlined). HTML rather than a figure: exact numbers, and milliseconds per run instead of seconds."""
    try:
        split, lr_key, grids = plots.head_grid(r)
    except ConfigError:  # no lr × wd grid in this result's heads (kNN, logistic regression)
        return []
    values = [v for g in grids.values() for v in g.to_numpy().ravel() if v == v]
    lo, hi = min(values), max(values)
    cmap = matplotlib.colormaps["viridis"]
    chosen = next((h for h in r.record.heads if h.get("name") == r.record.selection.get("head")), {})
    panels = []
    for name, grid in grids.items():
        rows = []
        for lr, line in grid.iterrows():
            cells = []
            for wd, v in line.items():
                if v != v:  # NaN: that head is missing
                    cells.append(Cell(MISSING, cls="missing"))
                    continue
                rgb = cmap((v - lo) / (hi - lo) if hi > lo else 0.5)
                light = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2] > 0.55
                selected = (f"{chosen.get('representation')}/{chosen.get('head')}" == name
                            and chosen.get(lr_key) == lr and chosen.get("wd") == wd)
                cells.append(Cell(f"{v:.1f}", float(v), "heat selected" if selected else "heat",
                                  title="selected head" if selected else None,
                                  style=f"background:{matplotlib.colors.to_hex(rgb)};color:{'#000' if light else '#fff'}"))
            rows.append((f"{lr:g}", cells))
        caption = f"{r.record.selection.get('metric') or 'top1'} (%) on {split}"
        panels.append(HeatPanel(name, caption, lr_key, [f"{w:g}" for w in grid.columns], rows))
    return panels


def run_context(r: Result, json_href: str, predictions_href: str | None) -> dict[str, Any]:
    """Everything ``run.html`` shows for one result; the hrefs are the copies beside the page."""
    rec = r.record
    seeds = rec.seeds or {}
    columns = [Column("metric"), Column("value", numeric=True)]
    if seeds:
        columns.append(Column(f"{seeds.get('n')} probe seeds: mean ± std"))
    ci = rec.ci or {}
    how = ", ".join(f"{m} {v}" for m, v in (ci.get("method") or {}).items()) or "percentile bootstrap"
    note = (f"value on the reported split; [lo, hi] = 95% interval over test examples ({how}; test split "
            f"{ci.get('design', 'not recorded')})")
    if r.test_selected:
        note += f"; {TEST_SELECTED_LEGEND}"
    metrics = Table("metrics", columns, count=False, note=note)
    for m in rec.metrics:
        cells = [Cell(m), metric_cell(r, m)]
        if seeds:
            spread = seeds.get(m) if isinstance(seeds.get(m), dict) else None
            cells.append(Cell(f"{spread['mean']:.2f} ± {spread['std']:.2f}" if spread else MISSING))
        metrics.rows.append(Row(cells))
    protocol = {k: v for k, v in rec.protocol.items() if k not in ("config", "deviations")}
    return {
        "r": r, "json_href": json_href, "predictions_href": predictions_href, "metrics": metrics,
        "data_issues": r.data_issues, "protocol": _items(protocol),
        "deviations": [str(d) for d in rec.protocol.get("deviations") or []],
        "recipe": yaml.safe_dump(rec.protocol.get("config") or {}, sort_keys=False, allow_unicode=True),
        "heatmap": heat_panels(r),
        "heads": heads_table(r),
        "sections": [
            ("Model", _items(rec.model)), ("Dataset", _items(rec.dataset)), ("Features", _items(rec.features)),
            ("Selection", _items(rec.selection)),
            *([("Saved head", _items(rec.head_file))] if rec.head_file else []),
            *([("Distribution shift", _items(rec.shift))] if rec.shift else []),
            ("Training", [("adaptation", rec.adaptation), ("optimizer", _text(rec.optimizer)), ("seed", str(rec.seed)),
                          ("seeds", _text(rec.seeds))]),
            ("Environment", _items(rec.env)), ("Timings", _items(rec.timings)),
            ("File", [("source", str(r.path)), ("schema_version", str(rec.schema_version)), ("date", str(rec.date))]),
        ],
    }
