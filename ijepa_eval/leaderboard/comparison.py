"""One comparison of models over protocols: paired tests against a reference row → a table → notes.

``compare``, the demo and the HTML leaderboard all render a ``Comparison``; none of them repeats the steps.

Each cell is the result's reported metric (the head selected on held-out data) ± half its 95% bootstrap
interval, a significance mark against the reference row (the first, or ``reference``) and which
representation and head won, e.g. ``86.7 ± 0.6 ↑ (concatPOOL4/bn_linear)`` (cell format: leaderboard.tables).
The paired test runs on the two results' per-example predictions of the same test examples (McNemar's exact
test for top-1/top-5, a paired bootstrap for mean per-class accuracy, ``ijepa_eval.stats``); a fine-tuned
result whose protocol the reference row lacks is tested against its frozen result on the same examples
(and vice versa), as the paper's Table 2 compares methods. A pair that cannot be tested (another test set,
no predictions, a predictions file gone missing) is skipped with a note saying why.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from ijepa_eval.errors import ConfigError, unknown_choice
from ijepa_eval.leaderboard.footnotes import deviation_footnotes
from ijepa_eval.leaderboard.records import CONTEXT_MARK, CONTEXT_NOTE, Result
from ijepa_eval.leaderboard.render import MISSING, fmt, markdown, write_frame
from ijepa_eval.leaderboard.tables import CELL_LEGEND, group_models, marked, value_cell
from ijepa_eval.stats import PairedTest, paired_test

Row = tuple[str, dict[str, Result]]  # (row label, our protocol name -> result)
VERDICT_WORDS = {"win": "real (better)", "loss": "real (worse)", "tie": "not significant"}


@dataclass(frozen=True)
class CellTest:
    """One cell tested against the reference row: which two results were paired and what the test said."""

    row: str
    protocol: str
    reference_protocol: str  # the reference row's cell it was paired with (its frozen cell for a fine-tuned one)
    test: PairedTest

    @property
    def verdict(self) -> str:
        return self.test.verdict

    @property
    def method(self) -> str:
        """The test that decided (``stats.paired_test``): McNemar's where it gives a p-value, else the bootstrap."""
        return "McNemar exact" if self.test.p_value is not None else "paired bootstrap"

    def sentence(self, reference: str) -> str:
        """The difference, its interval, the test and whether it is real."""
        t = self.test
        other = "" if self.reference_protocol == self.protocol else f" ({self.reference_protocol})"
        how = f"{self.method} p = {t.p_value:.3g}" if t.p_value is not None else self.method
        return (f"{self.protocol}: {self.row} − {reference}{other} = {t.diff:+.1f} {t.metric} points "
                f"[{t.diff_ci[0]:+.1f}, {t.diff_ci[1]:+.1f}], {how}: {VERDICT_WORDS[t.verdict]}")


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


def comparable(a: Result, b: Result) -> str | None:
    """Why two results cannot be paired example by example (None: they can)."""
    if a.test_set() != b.test_set():
        return "different test sets (dataset, split, fingerprint or size)"
    for r in (a, b):
        if (file := r.predictions_file) is not None and not file.is_file():
            return f"predictions file {file} is missing (keep it next to its JSON or re-run the protocol)"
    pa, pb = a.predictions, b.predictions
    if pa is None or pb is None:
        return "no per-example predictions (result written before schema 2)"
    if not (np.array_equal(pa.indices, pb.indices) and np.array_equal(pa.labels, pb.labels)):
        return "the predictions cover different test examples"
    return None


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
            tests[(name, p)] = CellTest(name, p, q, paired_test(pred.labels, pred.top5, ref_pred.top5, metric))
    return tests, skipped


def compare_frames(rows: list[Row], protocols: Sequence[str] | None, metric: str = "top1",
                   tests: Tests | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(display table with 'value ± h mark (repr/head)' cells, CSV table with value, head, interval, test)."""
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
            cell = marked(value_cell(value, ci), t.verdict if t else None)
            s[p] = f"{cell} ({r.winning_head()})" if value is not None else MISSING
            f[p] = fmt(value)
            f[f"{p} head"] = r.winning_head() if value is not None else MISSING
            f[f"{p} lo"], f[f"{p} hi"] = (f"{ci[0]:.2f}", f"{ci[1]:.2f}") if ci else (MISSING, MISSING)
            f[f"{p} vs ref"] = t.verdict if t else MISSING
            f[f"{p} p"] = f"{t.test.p_value:.3g}" if t and t.test.p_value is not None else MISSING
        shown.append(s)
        flat.append(f)
    columns = [c for p in protocols for c in (p, f"{p} head", f"{p} lo", f"{p} hi", f"{p} vs ref", f"{p} p")]
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

    @classmethod
    def of(cls, rows: list[Row], protocols: Sequence[str] | None = None, metric: str = "top1",
           reference: str | None = None) -> Comparison:
        """Test every row against ``reference`` (a row label, default the first row) over ``protocols``
        (default: every protocol found, in first-seen order)."""
        protocols = list(protocols or dict.fromkeys(p for _, cells in rows for p in cells))
        reference = reference_row(rows, reference)
        tests, skipped = significance(rows, protocols, metric, reference)
        return cls(rows, protocols, metric, reference, tests, skipped)

    @classmethod
    def of_results(cls, results: list[Result], protocols: Sequence[str] | None = None, metric: str = "top1",
                   reference: str | None = None) -> Comparison:
        """One row per model of existing result JSONs (newest result per protocol)."""
        return cls.of(rows_from_results(results), protocols, metric, reference)

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
        """One sentence per tested cell, then one per skipped pair."""
        return [t.sentence(self.reference) for t in self.tests.values()] + self.not_tested

    @property
    def footnotes(self) -> list[str]:
        """The references and declared deviations of the protocols shown."""
        return deviation_footnotes(r for _, cells in self.rows for p, r in cells.items() if p in self.protocols)

    @property
    def notes(self) -> list[str]:
        """compare.md's notes: the cell legend and one bullet per line, then the footnotes, a blank line apart
        (else Markdown reads the footnotes' heading as part of the last bullet)."""
        significance_block = [] if not self.lines else [
            f"{CELL_LEGEND}; marks compare each row with {self.reference} on the same test examples.", "",
            *(f"- {line}" for line in self.lines)]
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
