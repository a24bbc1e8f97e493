"""One paired test between two results on the same test examples, and the pairs the leaderboard tests.

``CellTest`` is what ``comparison`` (every row against the reference row) and the "Attentive probes" table
(each attentive cell against the same row's linear probe) both print: the difference, its interval and the
verdict from one method (``stats.paired_test``: McNemar's score test with Tango's interval for top-1/top-5,
a paired bootstrap for mean per-class accuracy), the p-value, unadjusted or Holm-adjusted, and the seed
spread where seeds ran. ``comparable`` says why two results cannot be paired.

An attentive result pairs with its recipe's ``attentive.linear_pair``: the linear probe on the same data, of
the same model (``pair_with_linear``, ``probe_pairs``): how much the attentive probe adds, beyond noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ijepa_eval.leaderboard.records import Result
from ijepa_eval.stats import PairedTest, paired_test, significant

VERDICT_WORDS = {"win": "significantly better", "loss": "significantly worse", "tie": "not significant"}
TEST_NAMES = {"tango-score": "McNemar score test, Tango interval",
              "stratified-paired-percentile": "class-stratified paired bootstrap",
              "paired-percentile": "paired bootstrap over examples"}


def diff_text(value: float) -> str:
    """A signed difference in points to 0.1, with more digits when that would print a nonzero bound as 0.0
    (an interval [+0.03, +2.1] excludes 0, and must read so)."""
    return f"{value:+.1f}" if value == 0 or abs(value) >= 0.05 else f"{value:+.2g}"


@dataclass(frozen=True)
class CellTest:
    """One cell tested against another: which two results were paired and what the test said. The other cell
    is the reference row's (``comparison``) or, ``within_row``, the same row's linear probe of an attentive
    cell (``pair_with_linear``)."""

    row: str
    protocol: str
    reference_protocol: str  # the other cell's protocol (the reference row's frozen cell for a fine-tuned one)
    test: PairedTest
    seed_std: tuple[float | None, float | None] = (None, None)  # probe-seed sd of (this cell, the other)
    p_adjusted: float | None = None  # Holm-adjusted p-value when the comparison adjusts
    family: int = 1  # how many tests the adjustment spans
    within_row: bool = False  # an attentive cell against its row's linear cell

    @property
    def verdict(self) -> str:
        """win / loss / tie: the test's own (its interval excludes 0) or, adjusted, Holm's p < 0.05."""
        if self.p_adjusted is None:
            return self.test.verdict
        return "tie" if not significant(self.p_adjusted) else "win" if self.test.diff > 0 else "loss"

    @property
    def method(self) -> str:
        """The test that decided, and whose interval is printed (``stats.paired_test``)."""
        return TEST_NAMES.get(self.test.method, self.test.method)

    def p_text(self) -> str:
        if self.p_adjusted is None:
            return f"{self.test.p_text()}, unadjusted"
        return f"{self.test.p_text()}, Holm-adjusted p = {self.p_adjusted:.3g} over {self.family} tests"

    def sentence(self, reference: str | None = None) -> str:
        """The difference, its interval, the test, the verdict with its p-value, and the seed spread."""
        t = self.test
        if self.within_row:
            what, names = f"{self.row}, attentive − linear ({self.reference_protocol})", ("attentive", "linear")
        else:
            other = "" if self.reference_protocol == self.protocol else f" ({self.reference_protocol})"
            what, names = f"{self.row} − {reference}{other}", (self.row, reference)
        text = (f"{self.protocol}: {what} = {diff_text(t.diff)} {t.metric} points "
                f"[{diff_text(t.diff_ci[0])}, {diff_text(t.diff_ci[1])}] ({self.method}): "
                f"{VERDICT_WORDS[self.verdict]} ({self.p_text()})")
        if any(s is not None for s in self.seed_std):
            spread = ", ".join(f"{who} {'—' if s is None else f'{s:.2f}'}"
                               for who, s in zip(names, self.seed_std, strict=True))
            text += f"; probe-seed sd {spread}: the test is conditional on one trained head each"
        return text


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


def is_attentive(r: Result) -> bool:
    config = r.record.protocol.get("config") or {}
    return r.record.probe == "attentive" or config.get("probe") == "attentive"


def linear_pair(r: Result) -> str | None:
    """The protocol (task) name of the linear probe an attentive result pairs with, on the same dataset."""
    pair = ((r.record.protocol.get("config") or {}).get("attentive") or {}).get("linear_pair")
    if not pair:
        return None
    _, at, dataset = r.protocol.partition("@")
    return f"{pair}@{dataset}" if at else pair


def pair_with_linear(row: str, cells: dict[str, Result], protocol: str, metric: str = "top1",
                     ) -> tuple[Result | None, CellTest | str | None]:
    """(the linear result, its paired test — or why there is none) for the attentive cell ``protocol``."""
    ours, linear_name = cells.get(protocol), None
    if ours is not None and is_attentive(ours):
        linear_name = linear_pair(ours)
    linear = cells.get(linear_name) if linear_name else None
    if ours is None or linear is None or ours.metric(metric) is None:
        return linear, None
    why = comparable(ours, linear)
    if why:
        return linear, why
    pred, ref = ours.predictions, linear.predictions
    return linear, CellTest(row, protocol, linear_name, paired_test(pred.labels, pred.top5, ref.top5, metric),
                            (ours.seed_std(metric), linear.seed_std(metric)), within_row=True)


def probe_pairs(rows: Sequence[tuple[str, dict[str, Result]]], metric: str = "top1",
                protocols: Sequence[str] | None = None) -> tuple[list[CellTest], list[str]]:
    """Every attentive cell (of ``protocols``, default all) of every row against the same row's linear cell,
    shown or not: (tests, one line per pair that could not be tested)."""
    tests, skipped = [], []
    for name, cells in rows:
        for p in (q for q in cells if protocols is None or q in protocols):
            linear, test = pair_with_linear(name, cells, p, metric)
            if isinstance(test, CellTest):
                tests.append(test)
            elif test is not None:
                skipped.append(f"{p}: {name} attentive vs linear ({linear.protocol}) not tested: {test}")
    return tests, skipped
