"""Side-by-side comparison of checkpoints over protocols (rows: checkpoints, columns: protocols).

Each cell is the result's reported metric (the head selected on held-out data) and which representation
and head won, e.g. ``86.7 (concatPOOL4/bn_linear)``. Runs are made or reused through ``run_protocol``
with ``skip_existing=True``, so re-running a comparison only computes what is missing.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ijepa_eval.errors import ConfigError
from ijepa_eval.leaderboard.footnotes import deviation_footnotes
from ijepa_eval.leaderboard.records import CONTEXT_MARK, CONTEXT_NOTE, Result, load_results
from ijepa_eval.leaderboard.render import MISSING, fmt, markdown, write_frame
from ijepa_eval.leaderboard.tables import group_models

Row = tuple[str, dict[str, Result]]  # (row label, our protocol name -> result)


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


def compare_frames(rows: list[Row], protocols: Sequence[str] | None, metric: str = "top1") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(display table with 'value (repr/head)' cells, CSV table with separate value and head columns)."""
    if protocols is None:  # every protocol found, in first-seen order
        protocols = list(dict.fromkeys(p for _, cells in rows for p in cells))
    shown, flat = [], []
    for name, cells in rows:
        if CONTEXT_MARK not in name and any(r.record.model.get("branch") == "context" for r in cells.values()):
            name += CONTEXT_MARK
        s, f = {"model": name}, {"model": name}
        for p in protocols:
            r = cells.get(p)
            value = r.metric(metric) if r else None
            s[p] = f"{fmt(value)} ({r.winning_head()})" if value is not None else MISSING
            f[p] = fmt(value)
            f[f"{p} head"] = r.winning_head() if value is not None else MISSING
        shown.append(s)
        flat.append(f)
    return pd.DataFrame(shown, columns=["model", *protocols]), pd.DataFrame(
        flat, columns=["model", *(c for p in protocols for c in (p, f"{p} head"))]
    )


def values(rows: list[Row], protocols: Sequence[str], metric: str = "top1") -> dict[str, dict[str, float | None]]:
    """Numbers for the grouped bar plot."""
    return {name: {p: (cells[p].metric(metric) if p in cells else None) for p in protocols} for name, cells in rows}


def footnotes(rows: list[Row], protocols: Sequence[str]) -> list[str]:
    """The references and declared deviations of the protocols shown."""
    return deviation_footnotes(r for _, cells in rows for p, r in cells.items() if p in protocols)


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
