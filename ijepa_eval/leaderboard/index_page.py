"""What ``index.html`` shows: the leaderboard grid (a ``Comparison``), every result, the paper tables with
ours beside them, the plots and every declared deviation.

Data only, built from result JSONs and the paper's reference numbers; ``html`` renders it through
``templates/index.html``. Links point at the run pages ``html`` writes (``hrefs``: result path -> link).
"""

from __future__ import annotations

import base64
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import pandas as pd

from ijepa_eval.leaderboard import plots, robustness
from ijepa_eval.leaderboard.cells import (
    PAPER_LEGEND,
    TEST_SELECTED_LEGEND,
    VALUE_LEGEND,
    paper_inside,
    paper_interval,
)
from ijepa_eval.leaderboard.comparison import Comparison
from ijepa_eval.leaderboard.html_table import (
    Cell,
    Column,
    Row,
    Table,
    ci_text,
    frame_table,
    leading_number,
    metric_cell,
    protocol_of,
    protocol_tokens,
)
from ijepa_eval.leaderboard.paper import ADAPTATIONS, load_compute
from ijepa_eval.leaderboard.records import CONTEXT_MARK, CONTEXT_NOTE, Result
from ijepa_eval.leaderboard.render import MISSING
from ijepa_eval.leaderboard.tables import OURS_MODEL, BuiltTable, Model, group_models
from ijepa_eval.results import METRIC_DIRECTIONS

METRIC_TITLES = {"top1": "top-1", "top5": "top-5", "mean_per_class_acc": "mean per-class acc"}


def delta_class(delta: float, inside: bool | None, higher_is_better: bool) -> str:
    """Colour of a Δ = ours − paper cell: the paper value inside our (seed-widened) 95% interval, better, worse
    or equal."""
    if inside:
        return "delta-in-ci"
    if delta == 0:
        return "delta-zero"
    return "delta-better" if (delta > 0) == higher_is_better else "delta-worse"


@dataclass
class PaperSection:
    title: str
    protocols: str
    main: Table
    ours_only: Table | None
    sources: list[str]


def paper_section(t: BuiltTable, models: dict[str, Model], hrefs: dict[Path, str]) -> PaperSection:
    metric = t.spec.rows["metric"].iloc[0]
    protocols = t.spec.protocols

    def decorate(row: dict[str, Any], column: str, cell: Cell) -> None:
        p = protocol_of(column, protocols)
        model = models.get(str(row.get(OURS_MODEL)))
        if not p or not model:
            return
        # the result the cell shows: a mixed-adaptation column's `ours {kind}`, else the paper's adaptation
        kind = next((a for a in ADAPTATIONS if column == f"{p} ours {a}"), row.get(f"{p} paper adaptation"))
        choice = model.choose(p, metric, comparable=True, adaptation=kind)
        if choice is None:
            return
        ours = choice.result
        ci = ours.ci(metric)
        if column in (f"{p} ours", f"{p} ours {kind}"):
            cell.href = hrefs[ours.path]
            interval = f"95% interval {ci_text(ci)} ({ours.ci_method(metric)})" if ci else ""
            selected = TEST_SELECTED_LEGEND if ours.test_selected else ""
            cell.title = "; ".join(t for t in ((choice.notes() or (ours.protocol,))[0], interval, selected) if t)
        elif column.endswith("Δ") and cell.value is not None:
            paper = leading_number(str(row.get(f"{p} paper")))
            inside = paper_inside(ours, metric, paper) if paper is not None else None
            cell.cls += " " + delta_class(cell.value, inside, METRIC_DIRECTIONS.get(metric, True))
            if inside is not None:
                interval = ci_text(paper_interval(ours, metric))
                widened = " (widened by the probe-seed spread)" if ours.seed_std(metric) is not None else ""
                cell.title = (f"paper {paper:g} is {'inside' if inside else 'outside'} our 95% interval {interval}"
                              f"{widened}; not a significance test")

    extra = None
    if len(t.ours_only):
        extra = frame_table(t.ours_only, f"{t.spec.key}-ours-only", protocols, model_column="Model")
    return PaperSection(
        t.spec.title, " ".join(dict.fromkeys(protocol_tokens(p) for p in protocols)),
        frame_table(t.main, t.spec.key, protocols, model_column=OURS_MODEL, decorate=decorate,
                    note=t.intro.strip() if t.intro else  # the attentive table's own legend
                    f"{metric} (%); ours: {VALUE_LEGEND}; {TEST_SELECTED_LEGEND}. {PAPER_LEGEND}"),
        extra, t.sources,
    )


def grid_table(comparison: Comparison, hrefs: dict[Path, str]) -> Table:
    """Models × protocols as ``compare`` prints them, each cell linking to its run; marks test each row
    against the comparison's reference row."""
    shown, metric = comparison.table, comparison.metric
    cells_of = {label: cells for label, (_, cells) in zip(shown["model"], comparison.rows, strict=True)}

    def decorate(row: dict[str, Any], column: str, cell: Cell) -> None:
        r = cells_of[row["model"]].get(column)
        if r is not None and cell.value is not None:
            cell.href = hrefs[r.path]
            cell.title = f"95% interval {ci_text(ci)}" if (ci := r.ci(metric)) else None

    return frame_table(shown, "grid", list(shown.columns[1:]), model_column="model", decorate=decorate,
                       note=f"newest result per model and protocol; {comparison.legend}; click a number to open its "
                            "run")


def results_table(results: list[Result], hrefs: dict[Path, str], metrics: Sequence[str]) -> Table:
    """One row per result JSON, with intervals where recorded."""
    columns = [Column("Model"), Column("Protocol"), Column("Dataset"),
               *(Column(METRIC_TITLES.get(m, m), numeric=True) for m in metrics),
               Column("Head"), Column("Selected on"), Column("Paper data"), Column("Date")]
    rows = []
    for r in sorted(results, key=lambda r: (r.protocol, -(r.metric(metrics[0]) or 0.0), r.display)):
        issues = r.data_issues
        paper_data = Cell(MISSING, cls="missing", title="not a paper protocol") if issues is None else (
            Cell("no", title="; ".join(issues)) if issues else Cell("yes"))
        rows.append(Row(
            [Cell(r.display, href=hrefs[r.path]), Cell(r.protocol), Cell(str(r.record.dataset.get("name") or MISSING)),
             *(metric_cell(r, m) for m in metrics), Cell(r.winning_head()), Cell(r.selected_on), paper_data,
             Cell(str(r.record.date)[:16].replace("T", " "), cls="nowrap")],
            model=r.display, protocols=protocol_tokens(r.protocol),
        ))
    return Table("results", columns, rows)


def robustness_table(results: list[Result], hrefs: dict[Path, str]) -> Table:
    """The robustness table (``robustness``) with each set's cell linking to its shift run."""
    _, rows = robustness.robustness_cells(results)
    by_row = {(row["model"][0], row["head"][0]): row for row in rows}

    def decorate(row: dict[str, Any], column: str, cell: Cell) -> None:
        r = by_row[(row["model"], row["head"])].get(column, (None, None))[1]
        if r is not None and cell.value is not None:
            cell.href = hrefs[r.path]
            metric = "mce" if column.endswith("mCE ↓") else "top1"
            interval = f"95% interval {ci_text(ci)} ({r.ci_method(metric)})" if (ci := r.ci(metric)) else ""
            selected = TEST_SELECTED_LEGEND if r.test_selected else ""
            cell.title = "; ".join(t for t in (r.protocol, interval, selected) if t)

    return frame_table(robustness.robustness_frame(results), "robustness", model_column="model", decorate=decorate,
                       note=" ".join([robustness.OURS_ONLY, *robustness.NOTES]))


def svg_uri(draw: Callable[[Path], list[Path]]) -> str:
    """Draw a plots.py figure into a temp folder and return its SVG as a data URI (fixed id salt, so
    rebuilding gives identical bytes)."""
    with tempfile.TemporaryDirectory() as tmp, matplotlib.rc_context({"svg.hashsalt": "ijepa-eval"}):
        svg = next(p for p in draw(Path(tmp) / "plot") if p.suffix == ".svg")
        return "data:image/svg+xml;base64," + base64.b64encode(svg.read_bytes()).decode("ascii")


def index_context(results: list[Result], hrefs: dict[Path, str], paper: pd.DataFrame, tables: list[BuiltTable],
                  comparison: Comparison, sources: Sequence[str] = (), metric: str = "top1") -> dict[str, Any]:
    """Everything ``index.html`` shows; the grid is ``comparison``, the bar plot shows ``metric``."""
    models = {m.display: m for m in group_models(results)}
    metrics = [m for m in METRIC_TITLES if any(r.metric(m) is not None for r in results)] or ["top1"]
    plot_list = []
    if results:
        plot_list.append({"uri": svg_uri(lambda s: plots.bars(plots.bar_values(results, None, metric), s, metric,
                                                              plots.bar_intervals(results, None, metric))),
                          "alt": f"{metric} per protocol and model, with 95% intervals"})
    plot_list.append({"uri": svg_uri(lambda s: plots.scatter(paper, load_compute(), results, s)),
                      "alt": "IN-1k 1% top-1 vs pretraining GPU-hours (paper Figure 1 style)"})
    deviations: dict[str, list[str]] = {}
    for r in sorted(results, key=lambda r: r.protocol):
        for d in r.record.protocol.get("deviations") or []:
            deviations.setdefault(r.protocol, [])
            if str(d) not in deviations[r.protocol]:
                deviations[r.protocol].append(str(d))
    protocols = sorted({r.protocol for r in results} | {p for t in tables for p in t.spec.protocols})
    shifted = robustness.shift_results(results)
    return {
        "results": results, "sources": [str(s) for s in sources], "metric": metric,
        "context_note": CONTEXT_NOTE if any(r.display.endswith(CONTEXT_MARK) for r in results) else None,
        "protocols": protocols, "models": sorted(models),
        "grid": grid_table(comparison, hrefs) if results else None,
        "tested": [(t.sentence(comparison.reference), protocol_tokens(t.protocol), t.row)
                   for t in comparison.tests.values()] if results else [],
        "untested": [(s.sentence(comparison.reference), protocol_tokens(s.protocol), s.row)
                     for s in comparison.skipped] if results else [],
        "runs": results_table(results, hrefs, metrics) if results else None,
        "plots": plot_list, "deviations": [(p, protocol_tokens(p), items) for p, items in sorted(deviations.items())],
        "paper_tables": [paper_section(t, models, hrefs) for t in tables],
        "robustness": robustness_table(results, hrefs) if shifted else None,
        "robustness_plot": {"uri": svg_uri(lambda s: robustness.scatter(results, s)),
                            "alt": "effective robustness: each shift set's top-1 against IN-val top-1 (95% intervals; "
                                   "below y = x = accuracy lost under the shift)"} if shifted else None,
    }
