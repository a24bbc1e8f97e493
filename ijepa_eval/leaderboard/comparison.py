"""One comparison of models over protocols: paired tests against a reference row → a table → notes.

``compare``, the demo and the HTML leaderboard all render a ``Comparison``; none of them repeats the steps.

Each cell is the result's reported metric (the head selected on held-out data) with its 95% interval, a
significance mark against the reference row (the first, or ``reference``) and which representation and head
won, e.g. ``86.7 [86.1, 87.3] ↑ (concatPOOL4/bn_linear)`` (cell format: ``cells``). The paired test runs on
the two results' per-example predictions of the same test examples (McNemar's score test with Tango's
interval for top-1/top-5, a paired bootstrap for mean per-class accuracy, ``ijepa_eval.stats``): the mark
and the printed interval of the difference come from one method, so they never disagree. Marks are
"significant at 5%, unadjusted" unless ``adjust="holm"`` (Holm–Bonferroni over every test of the
comparison), which the legend and each sentence say; a fine-tuned
result whose protocol the reference row lacks is tested against its frozen result on the same examples
(and vice versa), as the paper's Table 2 compares methods. A pair that cannot be tested (another test set,
no predictions, a predictions file gone missing) is skipped with a note saying why. Within a row, every
attentive-probe cell is also tested against the same checkpoint's linear probe on the same data (its recipe's
``attentive.linear_pair``; ``pairing``), shown or not: how much the attentive probe adds, beyond noise. Those
tests belong to the comparison's family: Holm adjusts over them too.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pandas as pd

from ijepa_eval.errors import ConfigError, unknown_choice
from ijepa_eval.leaderboard.cells import (
    ADJUSTMENTS,
    MARKS,
    SEED_LEGEND,
    TEST_SELECTED_LEGEND,
    VALUE_LEGEND,
    result_cell,
    significance_legend,
)
from ijepa_eval.leaderboard.footnotes import deviation_footnotes
from ijepa_eval.leaderboard.pairing import CellTest, comparable, probe_pairs
from ijepa_eval.leaderboard.records import CONTEXT_MARK, CONTEXT_NOTE, Result
from ijepa_eval.leaderboard.render import MISSING, fmt, markdown, write_frame
from ijepa_eval.leaderboard.tables import group_models
from ijepa_eval.stats import holm, paired_test

Row = tuple[str, dict[str, Result]]  # (row label, our protocol name -> result)
Tests = dict[tuple[str, str], CellTest]  # (row label, protocol) -> its test against the reference row


@dataclass(frozen=True)
class SkippedPair:
    """A cell that could not be tested against the reference row, and why (``comparable``)."""

    row: str
    protocol: str
    why: str

    def sentence(self, reference: str) -> str:
        return f"{self.protocol}: {self.row} vs {reference} not tested: {self.why}"


def rows_from_results(results: list[Result]) -> list[Row]:
    """One row per model found in existing result JSONs (newest result per protocol)."""
    return [(m.display, m.by_protocol) for m in group_models(results)]


def reference_row(rows: list[Row], reference: str | None) -> str | None:
    """The row every other row is tested against: ``reference`` or the first row.

    ``reference`` is a row label as shown (``mae (target)``) or the model label without its branch (``mae``).
    """
    names = [name for name, _ in rows]
    if reference is None:
        return names[0] if names else None
    matches = [n for n in names if n == reference] or [n for n in names if n.startswith(f"{reference} (")]
    if len(matches) != 1:
        raise ConfigError(unknown_choice("reference row", reference, names) if not matches else
                          f"reference '{reference}' matches rows {', '.join(matches)}; give one of them in full")
    return matches[0]


def reference_cell(ref_cells: dict[str, Result], protocol: str, ours: Result) -> tuple[str, Result] | None:
    """(protocol, result) of the reference row to test ``ours`` against: its result for the same protocol,
    else — a fine-tuned against a frozen result, as the paper's Table 2 compares methods — its first result of
    the other adaptation on the same test examples."""
    if protocol in ref_cells:
        return protocol, ref_cells[protocol]
    return next(((q, r) for q, r in ref_cells.items()
                 if r.record.adaptation != ours.record.adaptation and r.test_set() == ours.test_set()), None)


def significance(rows: list[Row], protocols: Sequence[str], metric: str = "top1",
                 reference: str | None = None) -> tuple[Tests, list[SkippedPair]]:
    """Paired tests of every row against the reference row, per protocol; plus each pair skipped, and why."""
    ref_name = reference_row(rows, reference)
    ref_cells = dict(rows).get(ref_name, {})
    tests, skipped = {}, []
    for name, cells in rows:
        for p in protocols:
            ours = cells.get(p)
            found = reference_cell(ref_cells, p, ours) if ours is not None and name != ref_name else None
            if found is None or ours.metric(metric) is None:
                continue
            q, ref = found
            why = comparable(ours, ref)
            if why:
                skipped.append(SkippedPair(name, p, why))
                continue
            pred, ref_pred = ours.predictions, ref.predictions
            tests[(name, p)] = CellTest(name, p, q, paired_test(pred.labels, pred.top5, ref_pred.top5, metric),
                                        (ours.seed_std(metric), ref.seed_std(metric)))
    return tests, skipped


def adjusted(tests: Sequence[CellTest], adjust: str | None) -> list[CellTest]:
    """The tests with Holm-adjusted p-values over all of them (``adjust="holm"``), else unchanged."""
    if adjust not in (*ADJUSTMENTS, None):
        raise ConfigError(unknown_choice("adjustment", str(adjust), ADJUSTMENTS))
    if adjust in (None, "none"):
        return list(tests)
    p_adjusted = holm([t.test.p_value for t in tests])
    return [dataclasses.replace(t, p_adjusted=q, family=len(tests)) for t, q in zip(tests, p_adjusted, strict=True)]


def compare_frames(rows: list[Row], protocols: Sequence[str] | None, metric: str = "top1",
                   tests: Tests | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(display table with 'value [lo, hi] mark (repr/head)' cells, CSV table with value, head, interval,
    interval method, test verdict and p-values in their own columns)."""
    if protocols is None:  # every protocol found, in first-seen order
        protocols = list(dict.fromkeys(p for _, cells in rows for p in cells))
    tests = tests or {}
    shown, flat = [], []
    for name, cells in rows:
        shown_name = name  # tests stay keyed by the row's own name
        if CONTEXT_MARK not in name and any(r.record.model.get("branch") == "context" for r in cells.values()):
            shown_name += CONTEXT_MARK
        s, f = {"model": shown_name}, {"model": shown_name}
        for p in protocols:
            r = cells.get(p)
            value = r.metric(metric) if r else None
            ci = r.ci(metric) if value is not None else None
            t = tests.get((name, p))
            s[p] = result_cell(r, metric, MARKS[t.verdict] if t else "", (r.winning_head(),) if r else ())
            f[p] = fmt(value)
            f[f"{p} head"] = r.winning_head() if value is not None else MISSING
            f[f"{p} lo"], f[f"{p} hi"] = (f"{ci[0]:.2f}", f"{ci[1]:.2f}") if ci else (MISSING, MISSING)
            f[f"{p} interval"] = r.ci_method(metric) if ci else MISSING
            f[f"{p} selected on"] = r.selected_on if value is not None else MISSING
            f[f"{p} seed sd"] = f"{std:.2f}" if value is not None and (std := r.seed_std(metric)) is not None else MISSING
            f[f"{p} vs ref"] = t.verdict if t else MISSING
            f[f"{p} p"] = f"{t.test.p_value:.3g}" if t else MISSING
            f[f"{p} p holm"] = f"{t.p_adjusted:.3g}" if t and t.p_adjusted is not None else MISSING
        shown.append(s)
        flat.append(f)
    columns = [c for p in protocols for c in (p, f"{p} head", f"{p} lo", f"{p} hi", f"{p} interval",
                                               f"{p} selected on", f"{p} seed sd", f"{p} vs ref", f"{p} p",
                                               f"{p} p holm")]
    return pd.DataFrame(shown, columns=["model", *protocols]), pd.DataFrame(flat, columns=["model", *columns])


@dataclass
class Comparison:
    """Rows of results, each cell tested against the reference row: the tests, the table, the notes.

    Build with ``Comparison.of(rows, ...)`` (or ``of_results``); render ``table`` (display cells),
    ``flat_table`` (CSV columns), ``lines`` (one sentence per tested or skipped pair), ``notes`` (what
    compare.md prints under the table), ``values`` / ``intervals`` (bar plot), or ``write`` it.
    """

    rows: list[Row]
    protocols: list[str]
    metric: str
    reference: str | None  # the reference row's label; None only when there are no rows
    tests: Tests  # every tested cell, in row then protocol order
    skipped: list[SkippedPair]  # every pair that could not be tested, and why
    adjust: str = "none"  # "holm": the marks use Holm-adjusted p-values over all tests (pairs included)
    pairs: list[CellTest] = field(default_factory=list)  # attentive cells against their row's linear cell
    pairs_skipped: list[str] = field(default_factory=list)  # such pairs that could not be tested, and why

    @classmethod
    def of(cls, rows: list[Row], protocols: Sequence[str] | None = None, metric: str = "top1",
           reference: str | None = None, adjust: str | None = None) -> Comparison:
        """Test every row against ``reference`` (a row label, default the first row) over ``protocols``
        (default: every protocol found, in first-seen order); ``adjust`` "holm" adjusts for their number."""
        protocols = list(protocols or dict.fromkeys(p for _, cells in rows for p in cells))
        reference = reference_row(rows, reference)
        tests, skipped = significance(rows, protocols, metric, reference)
        pairs, pairs_skipped = probe_pairs(rows, metric, protocols)
        family = adjusted([*tests.values(), *pairs], adjust)  # one family: every test the comparison prints
        return cls(rows, protocols, metric, reference, dict(zip(tests, family[:len(tests)], strict=True)), skipped,
                   adjust or "none", family[len(tests):], pairs_skipped)

    @classmethod
    def of_results(cls, results: list[Result], protocols: Sequence[str] | None = None, metric: str = "top1",
                   reference: str | None = None, adjust: str | None = None) -> Comparison:
        """One row per model of existing result JSONs (newest result per protocol)."""
        return cls.of(rows_from_results(results), protocols, metric, reference, adjust)

    def shown(self) -> list[Result]:
        """Every result in the table."""
        return [r for _, cells in self.rows for p, r in cells.items() if p in self.protocols]

    @property
    def legend(self) -> str:
        """What the cells and marks mean: the interval, the significance rule, and ‡ / seed sd where shown."""
        parts = [VALUE_LEGEND, significance_legend(self.reference, self.adjust,
                                                            len(self.tests) + len(self.pairs))]
        if any(r.test_selected for r in self.shown()):
            parts.append(TEST_SELECTED_LEGEND)
        if any(r.seed_std(self.metric) is not None for r in self.shown()):
            parts.append(SEED_LEGEND)
        return "; ".join(parts)

    @cached_property
    def _frames(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        return compare_frames(self.rows, self.protocols, self.metric, self.tests)

    @property
    def table(self) -> pd.DataFrame:
        """'value ± h mark (repr/head)' per cell; rows named as shown (a context row with † added)."""
        return self._frames[0]

    @property
    def flat_table(self) -> pd.DataFrame:
        """compare.csv: value, head, interval, verdict and p-value in their own columns."""
        return self._frames[1]

    @property
    def not_tested(self) -> list[str]:
        """One sentence per skipped pair."""
        return [s.sentence(self.reference) for s in self.skipped]

    @property
    def lines(self) -> list[str]:
        """One sentence per tested cell, then one per skipped pair; then each attentive cell against the same
        row's linear cell (``attentive.linear_pair``), and the pairs of those that could not be tested."""
        return ([t.sentence(self.reference) for t in self.tests.values()] + self.not_tested
                + [t.sentence() for t in self.pairs] + self.pairs_skipped)

    @property
    def footnotes(self) -> list[str]:
        """The references and declared deviations of the protocols shown."""
        return deviation_footnotes(r for _, cells in self.rows for p, r in cells.items() if p in self.protocols)

    @property
    def notes(self) -> list[str]:
        """compare.md's notes: the cell legend and one bullet per line, then the footnotes, a blank line apart
        (else Markdown reads the footnotes' heading as part of the last bullet)."""
        significance_block = [] if not self.lines else [f"{self.legend}.", "", *(f"- {line}" for line in self.lines)]
        blocks = [b for b in (significance_block, self.footnotes) if b]
        return [line for i, block in enumerate(blocks) for line in ([""] if i else []) + block]

    def values(self) -> dict[str, dict[str, float | None]]:
        """Numbers for the grouped bar plot."""
        return {name: {p: (cells[p].metric(self.metric) if p in cells else None) for p in self.protocols}
                for name, cells in self.rows}

    def intervals(self) -> dict[str, dict[str, tuple[float, float] | None]]:
        """95% intervals for the bar plot's error bars (None where a result has none)."""
        return {name: {p: (cells[p].ci(self.metric) if p in cells else None) for p in self.protocols}
                for name, cells in self.rows}

    def write(self, out_dir: str | os.PathLike, formats: Sequence[str] = ("md", "csv")) -> list[Path]:
        """``compare.md`` (the table, the † legend, the notes) and ``compare.csv`` (``flat_table``)."""
        out = Path(out_dir)
        title = f"Comparison: {self.metric} (%), selected head in parentheses"
        written = []
        if "md" in formats:
            md = f"## {title}\n\n" + markdown(self.table)
            if self.table["model"].str.contains(CONTEXT_MARK).any():
                md += f"\n{CONTEXT_NOTE}\n"
            if self.notes:
                md += "\n" + "\n".join(self.notes) + "\n"
            written += write_frame(self.table, out / "compare", ("md",), title, md=md)
        if "csv" in formats:
            written += write_frame(self.flat_table, out / "compare", ("csv",), title)
        return written
