"""The runs ``ijepa-eval compare CKPT...`` needs: every checkpoint × protocol, made or reused.

Runs go through ``run_protocol`` with ``skip_existing=True``, so re-running a comparison only computes what
is missing; the rows returned (checkpoint label -> protocol -> result) become a ``comparison.Comparison``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ijepa_eval.errors import ConfigError
from ijepa_eval.leaderboard.comparison import Row
from ijepa_eval.leaderboard.records import load_results


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
