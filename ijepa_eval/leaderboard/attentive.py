"""The "Attentive probes" table: published attentive-probe numbers (``results/paper/attentive_reference.csv``)
beside ours, and every attentive result beside the same checkpoint's linear probe on the same data.

A reference row names the probe that produced it (V-JEPA's, or Efficient Probing's EP, which is not V-JEPA's)
and where it was chosen; ours lands in it under the paper tables' rules (model metadata agrees, evaluated on
the paper's data). Cells are ``cells``' (``value [lo, hi]``, ``‡`` for a probe chosen on the test split, a
Δ range check ∉ / ∈). ``Ours − linear`` is a paired test on the same test examples (McNemar's score test with
Tango's interval, at 5%, unadjusted): the attentive result against its recipe's ``attentive.linear_pair``
result of the same model. ``compare`` runs the same pairing (``pairing.probe_pairs``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from ijepa_eval.leaderboard.cells import (
    MARKS,
    PAPER_LEGEND,
    TEST_SELECTED_LEGEND,
    VALUE_LEGEND,
    delta_cell,
    result_cell,
    significance_legend,
)
from ijepa_eval.leaderboard.pairing import CellTest, is_attentive, pair_with_linear
from ijepa_eval.leaderboard.paper import PAPER_DIR, PaperTable, _read_reference, row_matches
from ijepa_eval.leaderboard.records import Result
from ijepa_eval.leaderboard.render import MISSING, ValueCell, fmt
from ijepa_eval.leaderboard.tables import (
    OURS_MODEL,
    SELECTED_ON,
    WHY,
    BuiltTable,
    Model,
    build_tables,
    group_models,
)

ATTENTIVE_CSV = PAPER_DIR / "attentive_reference.csv"
ATTENTIVE_COLUMNS = ("source", "ref", "method", "arch", "epochs", "data", "protocol", "probe", "selected_on", "metric",
                     "value", "kind")
KEY = "attentive"
TITLE = "Attentive probes (V-JEPA's probe; published attentive numbers)"
REPORTED = ("test", "unstated")  # the number a source reports (its best epoch, or what its README gives)
METRIC = "top1"  # the table's metric (published attentive numbers are top-1)
LINEAR = "the same checkpoint's linear probe"  # what "Ours − linear" tests against
INTRO = (
    f"{METRIC} (%). paper = a published attentive-probe number (results/paper/attentive_reference.csv; "
    "`Paper probe` says which probe: `vjepa` = V-JEPA's, our recipe; `ep_q32` = Efficient Probing's EP, a "
    "different probe and recipe), `Paper selected on`: `test` = its best epoch on the reported split, `unstated` "
    "= the source does not say; paper linear = the same source's linear probe. ours = our attentive result, "
    f"ours linear = the same checkpoint's linear probe on the same data (the recipe's `linear_pair`): "
    f"{VALUE_LEGEND}; {TEST_SELECTED_LEGEND}. {PAPER_LEGEND}. ours − linear = the difference [its interval], "
    f"{significance_legend(LINEAR, None, 0)}. Selected on: `none` = one probe, "
    "its last epoch (V-JEPA's recipe); `train_holdout` / `val` = chosen among a grid on held-out data; `test` = "
    "chosen on the reported split (V-JEPA 2's convention).\n"
)


def load_attentive_reference(path: str | os.PathLike | None = None) -> pd.DataFrame:
    return _read_reference(Path(path or ATTENTIVE_CSV), ATTENTIVE_COLUMNS)


def _ours_cells(model: Model, protocol: str, ours: Result | None) -> dict[str, ValueCell]:
    linear, test = pair_with_linear(model.display, model.by_protocol, protocol) if ours else (None, None)
    paired = isinstance(test, CellTest)
    diff = ValueCell(test.test.diff, test.test.diff_ci, MARKS[test.verdict], signed=True) if paired else (
        ValueCell(None, signed=True))
    return {"Ours linear": result_cell(linear, METRIC), "Ours − linear": diff}


def build_attentive_table(reference: pd.DataFrame, results: list[Result]) -> BuiltTable:
    """Reference rows with ours placed in them, and an "ours only" section for every other attentive result."""
    rows = reference[reference["metric"] == METRIC]
    models = group_models([r for r in results if r.metric(METRIC) is not None])
    lines, sources, shown, placed = [], [], [], set()
    group_keys = ["ref", "method", "arch", "epochs", "data", "protocol", "probe"]  # one line per number reported
    for _, group in rows[rows["protocol"].str.contains("attentive")].groupby(group_keys, sort=False):
        row = group.iloc[0].to_dict()
        reported = group[group["selected_on"].isin(REPORTED)].iloc[0] if group["selected_on"].isin(REPORTED).any() \
            else group.iloc[0]
        linear = rows[(rows["ref"] == row["ref"]) & (rows["method"] == row["method"]) & (rows["arch"] == row["arch"])
                      & rows["probe"].str.startswith("lp") & rows["selected_on"].isin(REPORTED)]
        matched = [m for m in models if row_matches(row, m.meta)] or [None]
        for model in matched:
            choice = model.choose(row["protocol"], METRIC, comparable=True) if model else None
            ours = choice.result if choice else None
            line = {"Method": row["method"], "Arch": row["arch"], "Epochs": row["epochs"], "Data": row["data"],
                    "Protocol": row["protocol"], "Paper probe": row["probe"], "Paper selected on": reported["selected_on"],
                    "Paper": fmt(reported["value"]), "Paper linear": fmt(linear["value"].iloc[0]) if len(linear) else MISSING,
                    OURS_MODEL: model.display if model else MISSING,
                    "Ours": result_cell(ours, METRIC), "Δ": delta_cell(ours, METRIC, reported["value"]),
                    **_ours_cells(model, row["protocol"], ours),
                    SELECTED_ON: ours.selected_on if ours else MISSING,
                    "Paper source": f"{reported['source']} ({row['ref']})"}
            if ours:
                placed.add(id(ours))
                shown.append(ours)
                sources.append(f"{model.display} · {ours.protocol}: {ours.path}")
            lines.append(line)
    extra = []
    for model in models:
        for p, r in sorted(model.by_protocol.items()):
            if not is_attentive(r) or id(r) in placed:
                continue
            why = "; ".join(r.data_issues or []) or "no matching reference row"
            extra.append({"Model": model.display, "Protocol": p, "Ours": result_cell(r, METRIC),
                          **_ours_cells(model, p, r), SELECTED_ON: r.selected_on, WHY: why})
            shown.append(r)
            sources.append(f"{model.display} · {p}: {r.path}")
    main_cols = ["Method", "Arch", "Epochs", "Data", "Protocol", "Paper probe", "Paper selected on", "Paper",
                 "Paper linear", OURS_MODEL, "Ours", "Δ", "Ours linear", "Ours − linear", SELECTED_ON, "Paper source"]
    extra_cols = ["Model", "Protocol", "Ours", "Ours linear", "Ours − linear", SELECTED_ON, WHY]
    protocols = tuple(dict.fromkeys([*rows["protocol"], *(e["Protocol"] for e in extra)]))
    spec = PaperTable(KEY, TITLE, protocols, ("method", "arch"), rows.reset_index(drop=True))
    return BuiltTable(spec, pd.DataFrame(lines, columns=main_cols), pd.DataFrame(extra, columns=extra_cols), sources,
                      shown, intro=INTRO)


def every_table(paper: pd.DataFrame, results: list[Result]) -> list[BuiltTable]:
    """The paper's tables, then the attentive one: what ``table`` writes and ``index.html`` shows."""
    return [*build_tables(paper, results), build_attentive_table(load_attentive_reference(), results)]
