"""The robustness table: one row per reported ImageNet head, its IN-val number beside every shift set.

Built from shift results only (``record.shift``, written by ``ijepa-eval shift``); every cell is made by
``cells`` like any other table's (``value [lo, hi]``, CSV lo/hi/marks columns, ``‡`` where the head was
chosen on the images the cell reports, the IN-val probe-seed spread). The effective-robustness view plots
each set's top-1 against the same head's IN-val top-1 (points below the diagonal lose accuracy under the
shift).

There are no reference rows: the published frozen-probe numbers on these sets that we know of (e.g. DINOv2's
linear evaluation, facebookresearch/dinov2 ``eval/linear.py``) train their own probe with another head grid
and selection, not this protocol, so the table shows our results only and says so.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ijepa_eval.leaderboard.cells import TEST_SELECTED_LEGEND, VALUE_LEGEND, number_cell, result_cell
from ijepa_eval.leaderboard.footnotes import deviation_footnotes
from ijepa_eval.leaderboard.plots import save
from ijepa_eval.leaderboard.records import Result
from ijepa_eval.leaderboard.render import ValueCell, markdown, write_frame

STEM = "robustness"
TITLE = "Distribution shift: the reported ImageNet head on ImageNet-V2, ReaL, -A, -R, -Sketch and -C"
SET_LABELS = {"v2-matched-frequency": "V2 matched-freq.", "v2-threshold0.7": "V2 threshold-0.7",
              "v2-top-images": "V2 top-images", "real": "ReaL", "a": "IN-A", "r": "IN-R", "sketch": "IN-Sketch",
              "c": "IN-C"}
OURS_ONLY = ("Ours only: no published frozen-probe numbers on these sets follow this protocol (the same head, "
             "trained and selected as its ImageNet result says), so there are no reference rows.")
NOTES = [
    f"Cells: top-1 %; {VALUE_LEGEND}. ReaL: the bootstrap stratified by ImageNet val class, images without a "
    "ReaL label drawn and left out of the ratio (else Wilson over the images ReaL keeps). IN-C: mean top-1 over "
    "15 corruptions x 5 severities, and mCE (lower is better, AlexNet = 100) over the 15 benchmark corruptions, "
    "their intervals from one draw of the images shared by every corruption and severity (class-stratified "
    "where the images are balanced by design).",
    f"{TEST_SELECTED_LEGEND}. A shift set's own images were not seen by that choice, except ReaL's and IN-C's, "
    "which are the IN-val images.",
    "IN-A / IN-R: argmax over the set's 200 classes (the datasets' own evaluation); a column marked "
    "'1000-way' takes the argmax over all 1000 classes. ReaL: images whose ReaL label list is empty are excluded.",
]


def shift_results(results: list[Result]) -> list[Result]:
    return [r for r in results if r.record.shift]


def column(r: Result) -> str:
    """The set's column: '1000-way' for IN-A/-R scored over all classes, 'k of 15' for a partial IN-C run."""
    shift = r.record.shift
    name = SET_LABELS.get(shift["set"], shift["set"])
    if shift.get("classes") == "all" and shift["set"] in ("a", "r"):
        return f"{name} (1000-way)"
    run = (shift.get("corruptions") or {}).get("ce")
    if shift["set"] == "c" and run is not None and len(run) < 15:
        return f"{name} ({len(run)} of 15)"
    return name


def head_label(r: Result) -> str:
    """The head a row reports: its ImageNet result's protocol and the head's representation and kind."""
    head, source = r.record.shift["head"], r.record.shift.get("source_result") or {}
    return f"{source.get('protocol') or head['file']} · {head['representation']}/{head['kind']}"


def newest(results: list[Result]) -> list[Result]:
    """One shift result per (model, head, set run), the newest by date, in the sets' order."""
    chosen: dict[tuple, Result] = {}
    for r in sorted(shift_results(results), key=lambda r: (str(r.record.date), str(r.path))):
        chosen[(r.model_key, head_label(r), r.protocol)] = r
    order = list(SET_LABELS)
    return sorted(chosen.values(), key=lambda r: order.index(r.record.shift["set"])
                  if r.record.shift["set"] in order else len(order))


Cells = dict[str, tuple[str | ValueCell, Result | None]]


def in_val_cell(r: Result) -> ValueCell:
    """The head's IN-val top-1 as its ImageNet result shows it (quoted in ``shift.in_val``)."""
    in_val = r.record.shift.get("in_val") or {}
    ci = tuple(in_val["top1_ci"]) if in_val.get("top1_ci") else None
    return number_cell(in_val.get("top1"), ci, test_selected=r.selected_on == "test",
                       seed_std=in_val.get("top1_seed_std"))


def robustness_cells(results: list[Result]) -> tuple[list[str], list[Cells]]:
    """(columns, rows of {column: (cell, the result it shows)}): model | head | IN-val | one column per set run
    (IN-C: top-1, and mCE when all 15 corruptions ran)."""
    rows: dict[tuple, Cells] = {}
    columns = ["model", "head", "IN-val"]
    for r in newest(results):
        row = rows.setdefault((r.model_key, head_label(r)), {"model": (r.display, None), "head": (head_label(r), None)})
        if (r.record.shift.get("in_val") or {}).get("top1") is not None:
            row["IN-val"] = (in_val_cell(r), None)
        name = column(r)
        cells = {f"{name} top-1": "top1"} if r.record.shift["set"] == "c" else {name: "top1"}
        if r.metric("mce") is not None:  # mCE exists for the full 15 corruptions only
            cells[f"{name} mCE ↓"] = "mce"
        for col, metric in cells.items():
            if col not in columns:
                columns.append(col)
            row[col] = (result_cell(r, metric), r)
    return columns, list(rows.values())


def robustness_frame(results: list[Result]) -> pd.DataFrame:
    """The table, one row per (model, head): the model and head as text, every number a ``ValueCell`` (— when
    missing), so that CSV splits it into value, lo, hi and marks."""
    columns, rows = robustness_cells(results)
    return pd.DataFrame([[row.get(c, (ValueCell(None), None))[0] for c in columns] for row in rows], columns=columns)


def scatter_points(results: list[Result]) -> list[dict]:
    """(IN-val top-1, set top-1) per (head, set), with both intervals, for the effective-robustness view."""
    points = []
    for r in newest(results):
        in_val = r.record.shift.get("in_val") or {}
        if in_val.get("top1") is None or r.metric("top1") is None:
            continue
        points.append({"model": r.display, "set": column(r), "x": float(in_val["top1"]), "y": r.metric("top1"),
                       "x_ci": in_val.get("top1_ci"), "y_ci": r.ci("top1")})
    return sorted(points, key=lambda p: (p["set"], p["model"]))


def scatter(results: list[Result], stem: str | os.PathLike) -> list[Path]:
    """Shift top-1 against IN-val top-1, one colour per set, 95% intervals as error bars, and y = x."""
    points = scatter_points(results)
    fig = Figure(figsize=(5.2, 4.4))
    ax = fig.add_subplot()
    for name in dict.fromkeys(p["set"] for p in points):
        pts = [p for p in points if p["set"] == name]
        xs, ys = np.array([p["x"] for p in pts]), np.array([p["y"] for p in pts])
        err = [[[max(0.0, v - ci[0]), max(0.0, ci[1] - v)] if ci else [0.0, 0.0] for v, ci in
                zip(vals, [p[k] for p in pts], strict=True)] for vals, k in ((xs, "x_ci"), (ys, "y_ci"))]
        ax.errorbar(xs, ys, xerr=np.array(err[0]).T, yerr=np.array(err[1]).T, fmt="o", ms=4, capsize=2,
                    elinewidth=0.8, label=name)
    ax.plot([0, 100], [0, 100], color="grey", lw=0.8, ls="--", label="y = x (no loss under shift)")
    values = [v for p in points for v in (p["x"], p["y"])] or [0.0, 100.0]
    lo, hi = max(0.0, min(values) - 5), min(100.0, max(values) + 5)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("ImageNet val top-1 (%)")
    ax.set_ylabel("shift set top-1 (%)")
    ax.set_title("Effective robustness: each set against IN-val", fontsize=10)
    ax.legend(fontsize=7)
    return save(fig, stem)


def robustness_markdown(df: pd.DataFrame, results: list[Result]) -> str:
    lines = [f"# {TITLE}", "", markdown(df), OURS_ONLY, "", *NOTES, ""]
    return "\n".join(lines + deviation_footnotes(shift_results(results))) + "\n"


def write_robustness(results: list[Result], out_dir: str | os.PathLike, formats: tuple[str, ...]) -> list[Path]:
    """robustness.md/.csv/.tex and the scatter (PNG, SVG) in ``out_dir``; nothing when there are no shift results."""
    if not shift_results(results):
        return []
    df = robustness_frame(results)
    stem = Path(out_dir) / STEM
    written = write_frame(df, stem, formats, caption=f"{TITLE}. {OURS_ONLY}", md=robustness_markdown(df, results))
    return written + scatter(results, Path(out_dir) / f"{STEM}_scatter")
