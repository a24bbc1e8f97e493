"""Regression guard: compare result JSONs with expected values (CI for training runs).

Rule (per metric direction, ``results.METRIC_DIRECTIONS``), with Δ = ours − expected and tolerance t:
    higher is better:  Δ < −t  -> FAIL;  Δ > +t -> "improved" (passes);  otherwise "pass"
    lower is better:   Δ > +t  -> FAIL;  Δ < −t -> "improved" (passes);  otherwise "pass"
    no result for (model, protocol) or no such metric in it -> "missing" (fails)
An improvement passes so a better run never breaks CI; update the expected file to lock it in.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import pandas as pd
import yaml

from ijepa_eval.errors import ConfigError, RegressionError, unknown_choice
from ijepa_eval.leaderboard.records import Result, latest_by_model_protocol
from ijepa_eval.leaderboard.render import MISSING, fmt
from ijepa_eval.results import METRIC_DIRECTIONS

DEFAULT_TOLERANCE = 0.5
PASSING = ("pass", "improved")


@dataclass(frozen=True)
class Expectation:
    model: str  # label, checkpoint file name or sha256 prefix (>= 6 hex digits)
    protocol: str
    value: float
    metric: str = "top1"
    tolerance: float = DEFAULT_TOLERANCE
    branch: str | None = None  # target/context, ... when one checkpoint has results for several


def load_expected(path: str | os.PathLike) -> list[Expectation]:
    """YAML or JSON: a list of entries, or a mapping with key ``expected`` holding that list."""
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"expected-values file not found: {path}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML/JSON ({str(err).splitlines()[0]})") from None
    if isinstance(data, dict):
        data = data.get("expected")
    if not isinstance(data, list) or not data:
        raise ConfigError(f"{path} must hold a non-empty list of {{model, protocol, metric, value, tolerance}}")
    fields = set(Expectation.__dataclass_fields__)
    out = []
    for i, entry in enumerate(data):
        if not isinstance(entry, dict) or not {"model", "protocol", "value"} <= entry.keys():
            raise ConfigError(f"{path}: entry {i} needs keys model, protocol, value (got {entry!r})")
        unknown = set(entry) - fields
        if unknown:
            raise ConfigError(f"{path}: entry {i}: " + unknown_choice("key", sorted(unknown)[0], fields))
        metric = str(entry.get("metric", "top1"))
        if metric not in METRIC_DIRECTIONS:
            raise ConfigError(f"{path}: entry {i}: " + unknown_choice("metric", metric, METRIC_DIRECTIONS))
        try:
            exp = Expectation(
                model=str(entry["model"]),
                protocol=str(entry["protocol"]),
                value=float(entry["value"]),
                metric=metric,
                tolerance=float(entry.get("tolerance", DEFAULT_TOLERANCE)),
                branch=None if entry.get("branch") is None else str(entry["branch"]),
            )
        except (TypeError, ValueError):
            raise ConfigError(f"{path}: entry {i}: value and tolerance must be numbers") from None
        if exp.tolerance < 0:
            raise ConfigError(f"{path}: entry {i}: tolerance must be >= 0")
        out.append(exp)
    return out


def verdict(exp: Expectation, ours: float | None) -> str:
    if ours is None:
        return "missing"
    delta = ours - exp.value
    if not METRIC_DIRECTIONS[exp.metric]:
        delta = -delta  # lower is better: flip so "positive = better" below
    if delta < -exp.tolerance:
        return "FAIL"
    return "improved" if delta > exp.tolerance else "pass"


def check(expected: list[Expectation], results: list[Result]) -> pd.DataFrame:
    """One row per expectation with ours, Δ and status; the newest result per (model, protocol) counts."""
    latest = list(latest_by_model_protocol(results).values())
    rows: list[dict[str, Any]] = []
    for exp in expected:
        found = [r for r in latest if r.protocol == exp.protocol and r.matches_model(exp.model)
                 and exp.branch in (None, r.record.model.get("branch"))]
        if len({r.record.model.get("branch") for r in found}) > 1:  # one checkpoint's target and context
            raise ConfigError(f"expected {exp.model} {exp.protocol} matches several branches: "
                              f"{', '.join(sorted(r.display for r in found))}; add `branch: ...` to the entry")
        found.sort(key=lambda r: (str(r.record.date), str(r.path)))  # a label reused by newer checkpoints
        ours = found[-1].metric(exp.metric) if found else None
        rows.append(
            {
                "model": exp.model,
                "protocol": exp.protocol,
                "metric": exp.metric,
                "expected": fmt(exp.value),
                "tolerance": f"{exp.tolerance:g}",
                "ours": fmt(ours),
                "Δ": fmt(None if ours is None else ours - exp.value, signed=True),
                "status": verdict(exp, ours),
                "result": str(found[-1].path) if found else MISSING,
            }
        )
    return pd.DataFrame(rows)


def raise_on_failure(table: pd.DataFrame) -> None:
    """Exit status for CI: RegressionError (exit 1) naming the first failing check."""
    bad = table[~table["status"].isin(PASSING)]
    if len(bad):
        first = bad.iloc[0]
        raise RegressionError(
            f"{len(bad)} of {len(table)} checks failed (first: {first['model']} {first['protocol']} "
            f"{first['metric']} {first['status']}: ours {first['ours']} vs expected {first['expected']} "
            f"± {first['tolerance']})"
        )
