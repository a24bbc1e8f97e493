"""Paper tables with our numbers beside them: paper value, ours, Δ = ours − paper, per (row, protocol).

A result lands in a paper row when its model metadata (result ``model.meta`` or the models manifest)
agrees with the row's method, arch, epochs, data and masking (``paper.row_matches``) AND it was evaluated
on the paper's data (``splits.data_issues``: dataset, reported split, images per split, classes, 1% split
file). Results that fit no row of a table, or ran on other data (CLEVR-mini, a subset), go to that table's
"ours only" section with the reason.

Cells (``cells``; the same in Markdown, LaTeX and the HTML page, CSV splits them into value/lo/hi/marks):
``72.4 [71.1, 73.6]`` our number and its 95% interval, ``‡`` after it when the head was chosen on the test
split, ``(seed sd 0.12)`` with probe seeds; a Δ cell ``+3.4 ∉`` / ``+1.2 ∈`` says whether the paper's value
lies outside / inside that interval (a range check, not a test). Where a paper column is filled by several of
our protocols (Table 2: fine-tuning recipes, linear probe, logistic regression), ``Model.choose`` picks one by
its held-out selection score — never by the test score — and the cell names it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ijepa_eval.io import atomic_write_text
from ijepa_eval.leaderboard.cells import (
    PAPER_LEGEND,
    SEED_LEGEND,
    TEST_SELECTED_LEGEND,
    VALUE_LEGEND,
    delta_cell,
    result_cell,
)
from ijepa_eval.leaderboard.footnotes import deviation_footnotes
from ijepa_eval.leaderboard.paper import (
    ADAPTATION_SPLIT,
    ADAPTATIONS,
    ROW_KEYS,
    PaperTable,
    our_protocols,
    paper_adaptation,
    paper_tables,
    row_matches,
    row_source,
)
from ijepa_eval.leaderboard.records import CONTEXT_MARK, CONTEXT_NOTE, Result, latest_by_model_protocol
from ijepa_eval.leaderboard.render import MISSING, ValueCell, fmt, markdown, write_frame

KEY_TITLES = {"method": "Method", "arch": "Arch", "epochs": "Epochs", "data": "Data", "masking": "Masking"}
OURS_MODEL = "Ours (model)"
SELECTED_ON = "Selected on"
WHY = "Not in a paper cell because"
NO_ROW = "no matching paper row"
NOTE_MARK = "ref"  # marks a paper source whose row is reference only (notes under the table)


@dataclass(frozen=True)
class Choice:
    """The result a paper cell shows, and how it was chosen among our protocols for that column."""

    result: Result
    rule: str = ""  # "" when only one of our protocols had a result

    def notes(self) -> tuple[str, ...]:
        return (f"{self.result.protocol}, {self.rule}",) if self.rule else ()


def choice_cell(choice: Choice | None, metric: str) -> ValueCell:
    """The chosen result's cell, naming the protocol when it was chosen among several; ``—`` without one."""
    return result_cell(choice.result, metric, notes=choice.notes()) if choice else result_cell(None, metric)


@dataclass
class Model:
    """Every latest result of one model, by our protocol name."""

    display: str
    meta: dict
    by_protocol: dict[str, Result] = field(default_factory=dict)

    def choose(self, paper_protocol: str, metric: str, comparable: bool | None = None,
               adaptation: str | None = None) -> Choice | None:
        """Our result for a paper column (PROTOCOL_SOURCES); ``comparable`` True keeps results on the paper's
        data only, False the others, None all; ``adaptation`` keeps "finetune" or "frozen" results only.

        Several candidates (Table 2: two fine-tuning recipes, or linear probe vs logistic regression): the one
        whose selected head scores best on the held-out data they all chose on (same split, metric, holdout
        fraction and seed); when one of them chose on the test split or not at all, the first in the declared
        order of PROTOCOL_SOURCES. Never the test score: that would be one more choice made on the test split.
        """
        candidates = [
            r for p in our_protocols(paper_protocol)
            if (r := self.by_protocol.get(p)) and r.metric(metric) is not None
            and comparable in (None, r.comparable) and adaptation in (None, r.record.adaptation)
        ]
        if len(candidates) < 2:
            return Choice(candidates[0]) if candidates else None
        held_out = [r.held_out_score() for r in candidates]
        if all(held_out) and len({where for where, _ in held_out}) == 1:
            (split, held_metric, *_), _ = held_out[0]
            best = max(range(len(candidates)), key=lambda i: (held_out[i][1], -i))  # ties: declared order
            return Choice(candidates[best], f"best {split} {held_metric} of {len(candidates)} protocols")
        return Choice(candidates[0], f"first in declared order of {len(candidates)} (no shared held-out score)")


@dataclass
class BuiltTable:
    spec: PaperTable
    main: pd.DataFrame
    ours_only: pd.DataFrame
    sources: list[str]
    results: list[Result] = field(default_factory=list)  # every result shown, for the footnotes
    intro: str | None = None  # the legend under the title, when it is not the I-JEPA paper's (attentive table)


def group_models(results: list[Result]) -> list[Model]:
    models: dict[tuple, Model] = {}
    for (key, protocol), r in sorted(latest_by_model_protocol(results).items()):
        model = models.setdefault(key, Model(r.display, {}))
        model.by_protocol[protocol] = r
        model.meta = {**r.meta, **model.meta}  # any result's meta places the model; first (sorted) wins
    return sorted(models.values(), key=lambda m: m.display)


def _source(model: Model, protocol: str, r: Result) -> str:
    return f"{model.display} · {protocol}: {r.path} ({r.protocol}, head {r.winning_head()}, selected on {r.selected_on})"


def _selected_on(results: list[Result]) -> str:
    return ", ".join(sorted({r.selected_on for r in results})) or MISSING


def _cell_columns(protocol: str) -> tuple[str, ...]:
    """paper, ours, Δ; a mixed-adaptation column also names the paper's adaptation and source, and shows both
    of ours."""
    if protocol in ADAPTATION_SPLIT:
        return ("paper", "paper adaptation", "paper source", *(f"ours {a}" for a in ADAPTATIONS), "ours", "Δ")
    return ("paper", "ours", "Δ")


def _ours_only_columns(protocol: str) -> list[tuple[str, str | None]]:
    """(column, adaptation) of the "ours only" section: one per adaptation for a mixed-adaptation column."""
    if protocol in ADAPTATION_SPLIT:
        return [(f"{protocol} ours {a}", a) for a in ADAPTATIONS]
    return [(f"{protocol} ours", None)]


def build_table(spec: PaperTable, models: list[Model]) -> BuiltTable:
    metric = spec.rows["metric"].iloc[0]
    present = [m for m in models if any(m.choose(p, metric) for p in spec.protocols)]
    key_cols = [KEY_TITLES[k] for k in spec.row_keys]
    lines, sources, matched_ids, shown_results = [], [], set(), []
    for _, group in spec.rows.groupby(list(ROW_KEYS), sort=False):
        row = group.iloc[0].to_dict()
        paper = {r["protocol"]: r["value"] for r in group.to_dict("records")}
        matched = [m for m in present if row_matches(row, m.meta)] or [None]
        for model in matched:
            line = {KEY_TITLES[k]: row[k] for k in spec.row_keys}
            line[OURS_MODEL] = model.display if model else MISSING
            placed = []
            for p in spec.protocols:
                how = paper_adaptation(p, row["method"])  # mixed columns: compare like with like
                comparable = model is not None and how in (None, *ADAPTATIONS)  # unknown: reference only
                choice = model.choose(p, metric, comparable=True, adaptation=how) if comparable else None
                ours = choice.result if choice else None
                ref = paper.get(p)
                line[f"{p} paper"] = fmt(ref)
                if how:
                    source = row_source(p, row["method"])
                    line[f"{p} paper adaptation"] = how
                    line[f"{p} paper source"] = f"{source.source} [{NOTE_MARK}]" if source.note else source.source
                    for kind in ADAPTATIONS:
                        c = model.choose(p, metric, comparable=True, adaptation=kind) if model else None
                        line[f"{p} ours {kind}"] = choice_cell(c, metric)
                        if c and c.result is not ours:
                            sources.append(_source(model, p, c.result))
                            shown_results.append(c.result)
                line[f"{p} ours"] = choice_cell(choice, metric)
                line[f"{p} Δ"] = delta_cell(ours, metric, ref)
                if ours:
                    placed.append(ours)
                    shown_results.append(ours)
                    sources.append(_source(model, p, ours))
            line[SELECTED_ON] = _selected_on(placed)
            if model:
                matched_ids.add(id(model))
            lines.append(line)
    columns = [*key_cols, OURS_MODEL, *(f"{p} {c}" for p in spec.protocols for c in _cell_columns(p)), SELECTED_ON]
    extra = []
    for model in present:
        in_row = id(model) in matched_ids
        line = {"Model": model.display, **{KEY_TITLES[k]: str(model.meta.get(k, "")) for k in ("method", "arch", "epochs", "data")}}
        shown, why = [], [] if in_row else [NO_ROW]
        for p in spec.protocols:
            for column, kind in _ours_only_columns(p):  # fine-tuned and frozen never share a cell
                choice = model.choose(p, metric, comparable=False if in_row else None, adaptation=kind)
                ours = choice.result if choice else None
                line[column] = choice_cell(choice, metric)
                if ours:
                    shown.append(ours)
                    shown_results.append(ours)
                    why += [f"{p}: {issue}" for issue in ours.data_issues or []]
                    sources.append(_source(model, p, ours))
        if shown:
            extra.append({**line, SELECTED_ON: _selected_on(shown), WHY: "; ".join(dict.fromkeys(why))})
    extra_cols = ["Model", "Method", "Arch", "Epochs", "Data",
                  *(column for p in spec.protocols for column, _ in _ours_only_columns(p)), SELECTED_ON, WHY]
    return BuiltTable(spec, pd.DataFrame(lines, columns=columns), pd.DataFrame(extra, columns=extra_cols), sources,
                      shown_results)


def reference_only_notes(t: BuiltTable) -> list[str]:
    """Why some paper rows of a mixed-adaptation column have no Δ (unknown adaptation, or not a ViT)."""
    notes = []
    for p in t.spec.protocols:
        for method in dict.fromkeys(t.spec.rows["method"]):
            source = row_source(p, method)
            if source and source.note:
                notes.append(source.note)
    return list(dict.fromkeys(notes))


def data_notes(results: list[Result]) -> list[str]:
    """One line per result of a paper protocol that was not evaluated on the paper's data."""
    return [f"note: {r.path}: {r.protocol} kept out of the paper cells ({'; '.join(r.data_issues)})"
            for r in sorted(results, key=lambda r: str(r.path)) if r.data_issues]


def build_tables(paper: pd.DataFrame, results: list[Result]) -> list[BuiltTable]:
    models = group_models(results)
    return [build_table(spec, models) for spec in paper_tables(paper)]


def table_markdown(t: BuiltTable) -> str:
    metric = t.spec.rows["metric"].iloc[0]
    parts = [
        f"## {t.spec.title}\n",
        t.intro or (f"{metric} (%). paper = reference value from the I-JEPA paper; ours = our result JSON; Δ = ours − paper; "
        f"{MISSING} = no run. A result fills a paper cell only if it was evaluated on the paper's data "
        f"(results/paper/README.md). {SELECTED_ON}: where the head was chosen; `test` is the paper's convention "
        f"(chosen on the reported split, optimistic), `train_holdout` and `val` are held out, `none` made no "
        f"choice (a fine-tuning run's last epoch). "
        f"ours: {VALUE_LEGEND}; {TEST_SELECTED_LEGEND}; {SEED_LEGEND}. {PAPER_LEGEND}.\n"),
        *[f"{p}: the paper adapted each row by fine-tuning or a frozen probe, whichever worked best for the "
          f"method (`{p} paper adaptation`, from the source in `{p} paper source`; results/paper/README.md quotes "
          f"the sentences); `ours finetune` and `ours frozen` are our fine-tuned and frozen results — where two of "
          f"our protocols qualify, the one with the best held-out selection score (never the test score), named "
          f"in the cell — and `ours` / Δ use the paper's adaptation for the row, never the other one.\n"
          for p in t.spec.protocols if p in ADAPTATION_SPLIT],
        markdown(t.main),
    ]
    if notes := reference_only_notes(t):
        parts += [f"\n[{NOTE_MARK}] Reference only:\n", "".join(f"- {n}\n" for n in notes)]
    if len(t.ours_only):
        parts += ["\n### Ours only (no matching paper row, or not the paper's evaluation data)\n", markdown(t.ours_only)]
    if CONTEXT_MARK in t.main.to_csv() + t.ours_only.to_csv():
        parts.append(f"\n{CONTEXT_NOTE}\n")
    if t.sources:
        parts += ["\nSources:\n", "".join(f"- {s}\n" for s in t.sources)]
    if notes := deviation_footnotes(t.results):
        parts += ["", "\n".join(notes) + "\n"]
    return "\n".join(parts)


def write_tables(tables: list[BuiltTable], out_dir: str | os.PathLike, formats: tuple[str, ...]) -> list[Path]:
    """``tableN.{md,csv,tex}``, ``tableN_ours_only.*`` when non-empty (stale ones removed), and README.md."""
    out = Path(out_dir)
    written = []
    for t in tables:
        written += write_frame(t.main, out / t.spec.key, formats, t.spec.title, md=table_markdown(t))
        extra_stem = out / f"{t.spec.key}_ours_only"
        if len(t.ours_only):
            written += write_frame(t.ours_only, extra_stem, formats, f"{t.spec.title}: ours only")
        else:
            for f in formats:
                extra_stem.with_suffix(f".{f}").unlink(missing_ok=True)
    index = out / "README.md"
    header = (
        "# Paper tables: reference vs ours\n\n"
        "Generated by `ijepa-eval table` (`make tables`) from result JSONs; do not edit by hand.\n"
        "Reference numbers: `results/paper/ijepa_paper.csv`; the attentive table's: "
        "`results/paper/attentive_reference.csv`.\n\n"
    )
    atomic_write_text(index, header + "\n".join(table_markdown(t) for t in tables))
    return [*written, index]
