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
    timings         {extraction_s, probe_s, total_s, device, device_name, device_count, gpu_hours}
                                                         gpu_hours = total_s × GPUs used / 3600, null on CPU
    date            ISO 8601 UTC
    seed            int
    adaptation      "frozen" | "finetune"
    probe           "linear" | "logreg" | "knn" | "finetune" | "attentive" or null (results before it was recorded)
    optimizer       {base_lr, base_batch, effective_lr} or null    lr rule: effective = base * batch / base_batch
    metrics_ci      {metric: [lo, hi]}                   95% interval over test examples (ijepa_eval.stats)
    ci              {level, design, method, resamples, seed, resampled?} or null   how metrics_ci was made:
                                                         design "class-balanced" | "iid" (the test split's),
                                                         method {metric: "wilson" | "stratified-percentile"
                                                         | "percentile"}; resamples/seed of the bootstraps;
                                                         resampled: what one draw covers, where a shift set
                                                         needs its own (ReaL, ImageNet-C)
    predictions     {file, sha256, format} or null       per-example labels + top-5, next to the JSON:
                                                         file is relative to the JSON's folder; format
                                                         "npz-v1" = labels int32 [N], top5 int16|int32
                                                         [N, min(5, C)] best first, indices int64 [N]
                                                         (dataset row of each test example)
    seeds           {n, seeds, head, metric: {mean, std, values}} or null
                                                         the selected head retrained with seeds seed..seed+n-1
                                                         (std: sample std, ddof 1)
    head_file       {file, sha256, format} or null       the reported head (linear, logreg), next to the JSON:
                                                         format "safetensors-head-v1" (ijepa_eval.probes.headfile)
    probe_file      {file, sha256, format} or null       the reported attentive probe, next to the JSON: format
                                                         "vjepa-checkpoint-pth" = V-JEPA's eval checkpoint layout
                                                         (ijepa_eval.probes.attentive.read_probe_file); it reads
                                                         patch tokens, so `shift` (pooled features) cannot apply it
    shift           {set, classes, val_images, head, source_result, in_val, ...} or null
                                                         a distribution-shift result (ijepa_eval.shift): which
                                                         head it applied and each set's extra numbers

``metric_directions`` says which way is better for every metric name the suite writes.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import io
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ijepa_eval.errors import IjepaEvalError
from ijepa_eval.io import atomic_open, atomic_write_json, sha256_file
from ijepa_eval.paths import inside, safe_component

SCHEMA_VERSION = 2
READABLE_SCHEMA_VERSIONS = (1, 2)

# True: higher is better. Every metric a protocol writes must be listed here.
METRIC_DIRECTIONS: dict[str, bool] = {
    "top1": True,
    "top5": True,
    "mean_per_class_acc": True,
    "loss": False,
    "mce": False,  # ImageNet-C mean Corruption Error (percent of AlexNet's)
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
    probe: str | None = None
    optimizer: dict[str, Any] | None = None
    metrics_ci: dict[str, list[float]] = field(default_factory=dict)
    ci: dict[str, Any] | None = None
    predictions: dict[str, Any] | None = None
    seeds: dict[str, Any] | None = None
    head_file: dict[str, Any] | None = None
    probe_file: dict[str, Any] | None = None
    shift: dict[str, Any] | None = None
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


PREDICTIONS_FORMAT = "npz-v1"
PREDICTIONS_SUFFIX = ".predictions.npz"


@dataclass
class Predictions:
    """Per-example test predictions of a result's selected head."""

    labels: np.ndarray  # [N] true class
    top5: np.ndarray  # [N, k] predicted classes, best first
    indices: np.ndarray  # [N] dataset row of each example (rows of unreadable images are absent)


def predictions_path(result_path: str | os.PathLike) -> Path:
    """``x__y__z.json`` -> ``x__y__z.predictions.npz`` (not matched by RESULT_GLOB)."""
    path = Path(result_path)
    return path.with_name(path.name.removesuffix(".json") + PREDICTIONS_SUFFIX)


def write_predictions(path: str | os.PathLike, labels: np.ndarray, top5: np.ndarray,
                      indices: np.ndarray) -> dict[str, Any]:
    """Write the ``npz-v1`` file atomically and byte-reproducibly; returns the result's ``predictions`` field.

    numpy's own savez stamps the current time into the zip, so the same predictions would hash differently
    on every run; here every member has a fixed date.
    """
    labels, top5 = np.asarray(labels), np.asarray(top5)
    if top5.ndim != 2 or len(top5) != len(labels) or len(indices) != len(labels):
        raise IjepaEvalError(f"predictions need labels [N], top5 [N, k], indices [N]; got {labels.shape}, "
                             f"{top5.shape}, {np.shape(indices)}")
    small = top5.size == 0 or int(top5.max()) <= np.iinfo(np.int16).max
    arrays = {"labels": labels.astype(np.int32), "top5": top5.astype(np.int16 if small else np.int32),
              "indices": np.asarray(indices, dtype=np.int64)}
    path = Path(path)
    with atomic_open(path, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, arr, allow_pickle=False)
            zf.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), buf.getvalue(),
                        compress_type=zipfile.ZIP_DEFLATED)
    return {"file": path.name, "sha256": sha256_file(path), "format": PREDICTIONS_FORMAT}


def load_predictions(record: ResultRecord, result_path: str | os.PathLike) -> Predictions | None:
    """The predictions a result points to, checked against its sha256; None when it has none (schema 1)."""
    field_ = record.predictions
    if not field_:
        return None
    if field_.get("format") != PREDICTIONS_FORMAT:
        raise IjepaEvalError(f"{result_path}: predictions format {field_.get('format')!r} is not "
                             f"{PREDICTIONS_FORMAT!r}; upgrade ijepa-eval")
    path = Path(result_path).parent / field_["file"]
    if not path.is_file():
        raise IjepaEvalError(f"{result_path}: predictions file {path} is missing; keep it next to the JSON "
                             "or re-run the protocol")
    if sha256_file(path) != field_.get("sha256"):
        raise IjepaEvalError(f"{path} does not match the sha256 recorded in {result_path} (changed after the "
                             "run); re-run the protocol")
    with np.load(path, allow_pickle=False) as z:
        return Predictions(z["labels"].astype(np.int64), z["top5"].astype(np.int64), z["indices"])
