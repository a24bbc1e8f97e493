"""Result JSON: one file per (checkpoint, protocol), the contract between protocols and leaderboards.

Schema (``schema_version`` 2; version 1 files are still read), in the spirit of lm-evaluation-harness'
results files::

    schema_version  int
    protocol        {name, task, version, config, reference, deviations}
                                                         resolved recipe (YAML + overrides); task = name, or
                                                         name@dataset when an override changed the dataset;
                                                         reference = what the recipe follows, deviations =
                                                         its declared differences from it (list of strings)
    model           {source, sha256, format, branch, arch, label?, meta?}
                    meta: optional {method, arch_name, epochs, data, gpu_hours} to place it in paper tables
    features        {representations, n_last_blocks, pool, img_size, transform, cache_key, mode}
    dataset         {name, train_split, val_split, test_split, num_classes, fingerprint, sizes, split_info?}
                    split_info: ImageNet subsets' split file {split_file, split_sha256, official}
    metrics         {top1, top5, mean_per_class_acc, ...}  percent; the *selected* head on the reported split
    selection       {split, head, metric}                  where the head was chosen ("train_holdout"|"val"|"test")
    heads           [{name, representation, head, lr, wd, ..., scores{split: {metric: value}}}]
    env             see ijepa_eval.env.environment()
    timings         {extraction_s, probe_s, total_s, gpu_hours}
    date            ISO 8601 UTC
    seed            int
    adaptation      "frozen" | "finetune"
    optimizer       {base_lr, base_batch, effective_lr} or null    lr rule: effective = base * batch / base_batch
    metrics_ci      {metric: [lo, hi]}                   95% bootstrap interval over test examples
    predictions     {file, sha256, format} or null       per-example labels + top-5, next to the JSON
    seeds           {n, metric: {mean, std}} or null     the selected probe retrained with n seeds

``metric_directions`` says which way is better for every metric name the suite writes.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ijepa_eval.errors import IjepaEvalError
from ijepa_eval.io import atomic_write_json
from ijepa_eval.paths import inside, safe_component

SCHEMA_VERSION = 2
READABLE_SCHEMA_VERSIONS = (1, 2)

# True: higher is better. Every metric a protocol writes must be listed here.
METRIC_DIRECTIONS: dict[str, bool] = {
    "top1": True,
    "top5": True,
    "mean_per_class_acc": True,
    "loss": False,
}


@dataclass
class ResultRecord:
    protocol: dict[str, Any]
    model: dict[str, Any]
    features: dict[str, Any]
    dataset: dict[str, Any]
    metrics: dict[str, float]
    selection: dict[str, Any]
    heads: list[dict[str, Any]] = field(default_factory=list)
    env: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    seed: int = 0
    date: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    adaptation: str = "frozen"
    optimizer: dict[str, Any] | None = None
    metrics_ci: dict[str, list[float]] = field(default_factory=dict)
    predictions: dict[str, Any] | None = None
    seeds: dict[str, Any] | None = None
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        # schema_version first so a reader sees it before anything else
        return {"schema_version": d.pop("schema_version"), **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ResultRecord:
        version = d.get("schema_version")
        if version not in READABLE_SCHEMA_VERSIONS:
            raise IjepaEvalError(
                f"result has schema_version {version!r}, this ijepa-eval reads {READABLE_SCHEMA_VERSIONS}; "
                "re-run the protocol or upgrade ijepa-eval"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        missing = {"protocol", "model", "metrics", "selection"} - d.keys()
        if missing:
            raise IjepaEvalError(f"result is missing keys {sorted(missing)}; it was not written by ijepa-eval")
        return cls(**{k: v for k, v in d.items() if k in names})


def result_filename(record: ResultRecord) -> str:
    """`<model label or sha12>__<branch>__<task>.json`: distinct for every (checkpoint, branch, protocol, data).

    The task is the protocol's name, with `@<dataset>` when it ran on another dataset than its recipe's.
    """
    model = record.model
    label = safe_component(model.get("label") or Path(str(model.get("source", "model"))).name, max_len=80)
    sha = safe_component(model.get("sha256") or "")[:12].strip("_")
    branch = safe_component(model.get("branch") or "default", max_len=40)
    task = safe_component(record.protocol.get("task") or record.protocol["name"], max_len=100)
    stem = f"{label}-{sha}" if sha else label
    return f"{stem}__{branch}__{task}.json"


def write_result(record: ResultRecord, out_dir: str | os.PathLike) -> Path:
    """Write atomically; returns the path. Never appends, never leaves a partial file, never leaves out_dir."""
    path = inside(out_dir, result_filename(record))
    atomic_write_json(path, record.to_dict())
    return path


def load_result(path: str | os.PathLike) -> ResultRecord:
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        raise IjepaEvalError(f"result file not found: {path}") from None
    except json.JSONDecodeError as err:
        raise IjepaEvalError(f"{path} is not valid JSON ({err.msg} at line {err.lineno}); delete and re-run") from None
    return ResultRecord.from_dict(data)


RESULT_GLOB = "*__*__*.json"  # the shape of result_filename(); folders also hold caches, logs, configs


def iter_result_paths(paths: list[str | os.PathLike]) -> list[Path]:
    """Expand files and folders into a sorted, de-duplicated list.

    In folders (searched recursively) only files named like results count, so a results tree may also
    hold a feature cache or a pretraining run; a file named explicitly is always read.
    """
    found: set[Path] = set()
    for p in map(Path, paths):
        if p.is_dir():
            found.update(q for q in p.rglob(RESULT_GLOB) if not q.name.startswith("."))
        elif p.exists():
            found.add(p)
        else:
            raise IjepaEvalError(f"no such result file or folder: {p}")
    return sorted(found)
