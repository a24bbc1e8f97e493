"""The cells every table and page shows, and the legends that say what their marks mean — in one place.

- ``result_cell(r, metric)``: ``72.4 [71.1, 73.6]`` — a result's number with its 95% interval over test
  examples as it is (``stats.metric_intervals`` made it, or a shift set's resampling that follows the same
  rule; the method is in the result's ``ci.method``), ``‡`` after the number when the head was chosen on
  the test split, the probe-seed spread when seeds ran. Every table of results builds its cells with it
  (Markdown, CSV with lo/hi columns, LaTeX, HTML); ``number_cell`` is the same from the parts.
- ``delta_cell(r, metric, paper)``: ``+3.4 ∉`` — ours − paper, and whether the paper's value lies outside
  (∉) or inside (∈) our interval widened by the probe-seed spread. A range check, not a significance test:
  the paper's number has test-set noise of its own, and was often chosen on the test split.
- ``MARKS``: the paired tests' ↑ / ↓ / ≈ (``comparison``), after a cell.
"""

from __future__ import annotations

from ijepa_eval.leaderboard.records import Result
from ijepa_eval.leaderboard.render import ValueCell
from ijepa_eval.stats import widen_by_seeds

WIN, LOSS, TIE = "↑", "↓", "≈"
MARKS = {"win": WIN, "loss": LOSS, "tie": TIE}
TEST_SELECTED = "‡"
PAPER_OUTSIDE, PAPER_INSIDE = "∉", "∈"
ADJUSTMENTS = ("none", "holm")

VALUE_LEGEND = ("value [lo, hi]: our number and its 95% interval over test examples (Wilson score interval; "
                "class-stratified bootstrap on a class-balanced test split: the result's ci.method)")
TEST_SELECTED_LEGEND = (f"{TEST_SELECTED} after a value: head chosen on the test split (the paper's convention), "
                        "so the value and its interval are optimistic")
SEED_LEGEND = "seed sd: standard deviation of the value over probe seeds (the selected head retrained, --seeds)"
PAPER_LEGEND = (f"Δ = ours − paper; {PAPER_OUTSIDE} / {PAPER_INSIDE}: the paper's value lies outside / inside our "
                "95% interval (widened by the probe-seed spread where seeds ran). A range check, not a significance "
                "test: the paper's own test-set noise and its choices made on the test split are not counted")


def adjustment_words(adjust: str | None, tests: int) -> str:
    """How the significance marks were decided: "at 5%, unadjusted" or after Holm over ``tests`` tests."""
    if adjust in (None, "none"):
        return "at 5%, unadjusted"
    return f"at 5% after Holm's adjustment over the {tests} tests of this comparison"


def significance_legend(reference: str | None, adjust: str | None, tests: int) -> str:
    return (f"{WIN} / {LOSS}: significantly higher / lower than {reference} {adjustment_words(adjust, tests)}, "
            f"{TIE}: not significant (paired on the same test examples: McNemar's score test with Tango's interval "
            "for top-1/top-5, a bootstrap for mean per-class accuracy; each conditional on one trained head per "
            "model)")


def seed_text(std: float | None) -> tuple[str, ...]:
    return () if std is None else (f"seed sd {std:.2f}",)


def seed_note(r: Result, metric: str) -> tuple[str, ...]:
    return seed_text(r.seed_std(metric))


def number_cell(value: float | None, ci: tuple[float, float] | None, *, test_selected: bool = False,
                seed_std: float | None = None, mark: str = "", notes: tuple[str, ...] = ()) -> ValueCell:
    """``result_cell`` from its parts, for a number a result quotes from another (a shift result's IN-val
    top-1); ``—`` without a value."""
    if value is None:
        return ValueCell(None)
    return ValueCell(value, ci, mark, (*seed_text(seed_std), *notes), test_selected)


def result_cell(r: Result | None, metric: str, mark: str = "", notes: tuple[str, ...] = ()) -> ValueCell:
    """A result's metric as every table shows it (see the module docstring); ``—`` without a value (still a
    ValueCell, so a CSV column has its lo/hi/marks columns whether or not any row has a run)."""
    if r is None:
        return ValueCell(None)
    return number_cell(r.metric(metric), r.ci(metric), test_selected=r.test_selected, seed_std=r.seed_std(metric),
                       mark=mark, notes=notes)


def paper_interval(r: Result, metric: str) -> tuple[float, float] | None:
    """The interval the paper's value is checked against: ours, widened by the probe-seed spread."""
    value, ci, std = r.metric(metric), r.ci(metric), r.seed_std(metric)
    if value is None or ci is None:
        return None
    return ci if std is None else widen_by_seeds(value, ci, std)


def paper_inside(r: Result, metric: str, paper: float) -> bool | None:
    """Whether the paper's value lies inside ``paper_interval`` (None: we have no interval)."""
    interval = paper_interval(r, metric)
    return None if interval is None else interval[0] <= paper <= interval[1]


def delta_cell(r: Result | None, metric: str, paper: float | None) -> ValueCell:
    """``ours − paper`` marked ∉ / ∈ (``paper_inside``); unmarked without an interval, ``—`` without both."""
    value = r.metric(metric) if r is not None else None
    if value is None or paper is None:
        return ValueCell(None, signed=True)
    inside = paper_inside(r, metric, paper)
    mark = "" if inside is None else PAPER_INSIDE if inside else PAPER_OUTSIDE
    return ValueCell(value - paper, None, mark, signed=True)
