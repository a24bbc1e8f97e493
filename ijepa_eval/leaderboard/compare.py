"""Side-by-side comparison of checkpoints over protocols (rows: checkpoints, columns: protocols).

Each cell is the result's reported metric (the head selected on held-out data) ± half its 95% bootstrap
interval, a significance mark against the reference row (the first, or ``reference``) and which
representation and head won, e.g. ``86.7 ± 0.6 ↑ (concatPOOL4/bn_linear)`` (cell format: leaderboard.tables).
The paired test runs on the two results' per-example predictions of the same test examples (McNemar's exact
test for top-1/top-5, a paired bootstrap for mean per-class accuracy, ``ijepa_eval.stats``); a fine-tuned
result whose protocol the reference row lacks is tested against its frozen result on the same examples
(and vice versa), as the paper's Table 2 compares methods. Runs are made
or reused through ``run_protocol`` with ``skip_existing=True``, so re-running a comparison only computes
what is missing.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ijepa_eval.errors import ConfigError, unknown_choice
from ijepa_eval.leaderboard.footnotes import deviation_footnotes
from ijepa_eval.leaderboard.records import CONTEXT_MARK, CONTEXT_NOTE, Result, load_results
from ijepa_eval.leaderboard.render import MISSING, fmt, markdown, write_frame
from ijepa_eval.leaderboard.tables import CELL_LEGEND, group_models, marked, value_cell
from ijepa_eval.stats import PairedTest, paired_test

Row = tuple[str, dict[str, Result]]  # (row label, our protocol name -> result)
Tests = dict[tuple[str, str], PairedTest]  # (row label, protocol) -> the row's result against the reference's


def checkpoint_labels(ckpts: Sequence[str], labels: Sequence[str] | None) -> list[str]:
    if labels is None:
        names = [Path(str(c)).name for c in ckpts]
        return names if len(set(names)) == len(names) else [str(c) for c in ckpts]
    if len(labels) != len(ckpts):
        raise ConfigError(f"--labels has {len(labels)} names for {len(ckpts)} checkpoints; give one per checkpoint")
    return list(labels)


def run_checkpoints(
    ckpts: Sequence[str],
    protocols: Sequence[str],
    *,
    labels: Sequence[str] | None = None,
    root: str | None = None,
    out_dir: str | os.PathLike = "results/runs",
    run: Callable[..., Path] | None = None,
    **run_options: Any,
) -> list[Row]:
    """Run (or reuse) every checkpoint × protocol through ``run`` (default ``run_protocol``).

    Given ``labels`` also name the models in the result JSONs; without them the runner's default naming
    is kept, so results written earlier by e.g. ``ijepa-eval linear`` are reused.
    """
    if run is None:
        from ijepa_eval.protocols import run_protocol as run
    names = checkpoint_labels(ckpts, labels)
    rows = []
    for name, ckpt in zip(names, ckpts, strict=True):
        named = {"label": name} if labels is not None else {}
        cells = {}
        for protocol in protocols:
            print(f"compare: {name} × {protocol}", file=sys.stderr)
            path = run(protocol, ckpt, root=root, out_dir=out_dir, skip_existing=True, **named, **run_options)
            result = load_results([path])[0]
            cells[result.protocol] = result  # the recipe's name, also when `protocol` was a YAML path
        rows.append((name, cells))
    return rows


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
                 reference: str | None = None) -> tuple[Tests, list[str]]:
    """Paired tests of every row against the reference row, per protocol; plus a note for each pair skipped."""
    ref_name = reference_row(rows, reference)
    ref_cells = dict(rows).get(ref_name, {})
    tests, notes = {}, []
    for name, cells in rows:
        for p in protocols:
            ours = cells.get(p)
            found = reference_cell(ref_cells, p, ours) if ours is not None and name != ref_name else None
            if found is None or ours.metric(metric) is None:
                continue
            ref = found[1]
            why = comparable(ours, ref)
            if why:
                notes.append(f"{p}: {name} vs {ref_name} not tested: {why}")
                continue
            pred, ref_pred = ours.predictions, ref.predictions
            tests[(name, p)] = paired_test(pred.labels, pred.top5, ref_pred.top5, metric)
    return tests, notes


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
            f[f"{p} p"] = f"{t.p_value:.3g}" if t and t.p_value is not None else MISSING
        shown.append(s)
        flat.append(f)
    columns = [c for p in protocols for c in (p, f"{p} head", f"{p} lo", f"{p} hi", f"{p} vs ref", f"{p} p")]
    return pd.DataFrame(shown, columns=["model", *protocols]), pd.DataFrame(flat, columns=["model", *columns])


def significance_notes(tests: Tests, skipped: list[str], rows: list[Row], metric: str = "top1",
                       reference: str | None = None) -> list[str]:
    """compare.md's notes under the table: the cell legend, then one bullet per test or skipped pair."""
    if not tests and not skipped:
        return []
    ref_name = reference_row(rows, reference)
    legend = f"{CELL_LEGEND}; marks compare each row with {ref_name} on the same test examples."
    return [legend, "", *(f"- {line}" for line in significance_lines(tests, rows, metric, reference) + skipped)]


def significance_lines(tests: Tests, rows: list[Row], metric: str = "top1", reference: str | None = None) -> list[str]:
    """One sentence per tested cell: the difference, its interval, the test and whether it is real."""
    ref_name = reference_row(rows, reference)
    cells, ref_cells = dict(rows), dict(rows).get(ref_name, {})
    lines = []
    for (name, p), t in tests.items():
        how = f"McNemar exact p = {t.p_value:.3g}" if t.p_value is not None else "paired bootstrap"
        real = {"win": "real (better)", "loss": "real (worse)", "tie": "not significant"}[t.verdict]
        q = reference_cell(ref_cells, p, cells[name][p])[0]
        lines.append(f"{p}: {name} − {ref_name}{'' if q == p else f' ({q})'} = {t.diff:+.1f} {metric} points "
                     f"[{t.diff_ci[0]:+.1f}, {t.diff_ci[1]:+.1f}], {how}: {real}")
    return lines


def values(rows: list[Row], protocols: Sequence[str], metric: str = "top1") -> dict[str, dict[str, float | None]]:
    """Numbers for the grouped bar plot."""
    return {name: {p: (cells[p].metric(metric) if p in cells else None) for p in protocols} for name, cells in rows}


def footnotes(rows: list[Row], protocols: Sequence[str]) -> list[str]:
    """The references and declared deviations of the protocols shown."""
    return deviation_footnotes(r for _, cells in rows for p, r in cells.items() if p in protocols)


def compare_notes(tests: Tests, skipped: list[str], rows: list[Row], protocols: Sequence[str], metric: str = "top1",
                  reference: str | None = None) -> list[str]:
    """compare.md's notes: the significance block, then the deviation footnotes, a blank line apart (else
    Markdown reads the footnotes' heading as part of the last bullet)."""
    blocks = [significance_notes(tests, skipped, rows, metric, reference), footnotes(rows, protocols)]
    return [line for i, block in enumerate(b for b in blocks if b) for line in ([""] if i else []) + block]


def write_compare(shown: pd.DataFrame, flat: pd.DataFrame, out_dir: str | os.PathLike, metric: str,
                  notes: Sequence[str] = ()) -> list[Path]:
    out = Path(out_dir)
    title = f"Comparison: {metric} (%), selected head in parentheses"
    md = f"## {title}\n\n" + markdown(shown)
    if shown["model"].str.contains(CONTEXT_MARK).any():
        md += f"\n{CONTEXT_NOTE}\n"
    if notes:
        md += "\n" + "\n".join(notes) + "\n"
    return write_frame(shown, out / "compare", ("md",), title, md=md) + write_frame(flat, out / "compare", ("csv",), title)


def intervals(rows: list[Row], protocols: Sequence[str], metric: str = "top1") -> dict[str, dict[str, tuple[float, float] | None]]:
    """95% intervals for the bar plot's error bars (None where a result has none)."""
    return {name: {p: (cells[p].ci(metric) if p in cells else None) for p in protocols} for name, cells in rows}
