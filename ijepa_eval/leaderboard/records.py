"""Result JSONs as the leaderboard sees them: who the model is, which paper row it belongs to, which run wins.

Only reads files (STYLE habit 10): nothing here touches a checkpoint.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from ijepa_eval.errors import ConfigError, IjepaEvalError
from ijepa_eval.leaderboard.splits import data_issues
from ijepa_eval.results import Predictions, ResultRecord, iter_result_paths, load_predictions, load_result

# Rows from a context (online) encoder, e.g. transformers' and timm's I-JEPA conversions, are marked.
CONTEXT_MARK = "†"
CONTEXT_NOTE = f"{CONTEXT_MARK} context (online) encoder, not the EMA target encoder the I-JEPA paper evaluates."
META_KEYS = ("method", "arch_name", "epochs", "data", "masking", "gpu_hours")


@dataclass
class Result:
    """One result JSON plus the metadata that places it (from the file, overridden by a manifest)."""

    path: Path
    record: ResultRecord
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def protocol(self) -> str:
        return self.record.protocol.get("task") or self.record.protocol["name"]  # knn@cifar100 ≠ knn@clevr

    @property
    def label(self) -> str:
        """How the model is named in tables: its label, else its file name, else its hash prefix."""
        model = self.record.model
        sha = (model.get("sha256") or "")[:12]
        return model.get("label") or Path(str(model.get("source") or "")).name or sha or "model"

    @property
    def model_key(self) -> tuple[str, str, str]:
        """Identity across protocols: (label, sha prefix, branch)."""
        model = self.record.model
        return self.label, (model.get("sha256") or "")[:12], model.get("branch") or ""

    @property
    def display(self) -> str:
        branch = self.record.model.get("branch")
        mark = CONTEXT_MARK if branch == "context" else ""
        return f"{self.label} ({branch}){mark}" if branch else self.label

    @property
    def selected_on(self) -> str:
        """Where the head was chosen: 'test' (the paper's convention), 'train_holdout' or 'val' (held out)."""
        return str(self.record.selection.get("split") or "?")

    @cached_property
    def data_issues(self) -> list[str] | None:
        """Why the evaluation data is not the paper's ([] = it is); None for protocols outside the paper."""
        return data_issues(self.record)

    @property
    def comparable(self) -> bool:
        """May fill a paper cell: a paper protocol evaluated on the paper's data."""
        return self.data_issues == []

    def metric(self, name: str) -> float | None:
        value = self.record.metrics.get(name)
        return None if value is None else float(value)

    @property
    def test_selected(self) -> bool:
        """The head (or epoch) was chosen on the reported split: its number and interval are optimistic.

        A shift result's head was chosen for ImageNet, so "test" is IN-val: it reports a shift set's images
        only where they are the IN-val images (``shift.val_images``: ReaL, ImageNet-C); ImageNet-V2, -A, -R
        and -Sketch are images the choice never saw.
        """
        return self.selected_on == "test" and bool((self.record.shift or {}).get("val_images", True))

    def ci(self, name: str) -> tuple[float, float] | None:
        """95% interval of a metric over test examples, if the result has one (schema 2)."""
        pair = (self.record.metrics_ci or {}).get(name)
        return None if pair is None else (float(pair[0]), float(pair[1]))

    def ci_method(self, name: str) -> str:
        """How ``ci(name)`` was made (``stats.metric_intervals``); results written before it was recorded
        had the percentile bootstrap over examples."""
        return str(((self.record.ci or {}).get("method") or {}).get(name) or "percentile")

    def seed_std(self, name: str) -> float | None:
        """Standard deviation of a metric over probe seeds (``--seeds``), None when only one seed ran."""
        spread = (self.record.seeds or {}).get(name)
        return float(spread["std"]) if isinstance(spread, dict) and spread.get("std") is not None else None

    def held_out_score(self) -> tuple[tuple, float] | None:
        """(where, score) of the selected head on held-out data — where = (split, metric, holdout fraction,
        seed), which two results must share for their scores to be compared — or None when the choice was
        made on the test split or not at all (a fine-tuning run's last epoch)."""
        sel = self.record.selection
        split, metric = sel.get("split"), sel.get("metric")
        if split in (None, "test", "none") or not metric:
            return None
        head = next((h for h in self.record.heads if h.get("name") == sel.get("head")), {})
        score = ((head.get("scores") or {}).get(split) or {}).get(metric)
        config = self.record.protocol.get("config") or {}
        where = (split, metric, (config.get("selection") or {}).get("holdout_fraction"), config.get("seed"))
        return None if score is None else (where, float(score))

    @property
    def predictions_file(self) -> Path | None:
        """Where the JSON says its per-example predictions are (beside it), present or not; None if it names none."""
        file = (self.record.predictions or {}).get("file")
        return self.path.parent / str(file) if file else None

    @cached_property
    def predictions(self) -> Predictions | None:
        """Per-example test predictions, sha256-checked (a one-line error if the file changed); None if none."""
        return load_predictions(self.record, self.path)

    def test_set(self) -> tuple[Any, ...]:
        """What must agree for a paired comparison: dataset, reported split, its fingerprint and size."""
        d = self.record.dataset
        split = d.get("test_split")
        return (d.get("name"), split, (d.get("fingerprint") or {}).get(split), (d.get("sizes") or {}).get(split))

    def winning_head(self) -> str:
        """'representation/head' of the selected head, e.g. 'concatPOOL4/bn_linear'."""
        chosen = self.record.selection.get("head")
        for head in self.record.heads:
            if head.get("name") == chosen and head.get("representation") and head.get("head"):
                return f"{head['representation']}/{head['head']}"
        return str(chosen or "?")

    def matches_model(self, key: str) -> bool:
        """A manifest/expected-file key names a model by label, source file name or sha256 prefix (>= 6)."""
        model = self.record.model
        sha = model.get("sha256") or ""
        return key in (model.get("label"), self.label, Path(str(model.get("source") or "")).name) or (
            len(key) >= 6 and sha.startswith(key.lower())
        )


def load_manifest(path: str | os.PathLike | None) -> dict[str, dict[str, Any]]:
    """YAML mapping model label or sha256 prefix -> meta {method, arch (or arch_name), epochs, data, ...}."""
    if path is None:
        return {}
    try:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
    except FileNotFoundError:
        raise ConfigError(f"models manifest not found: {path}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"models manifest {path} is not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ConfigError(f"models manifest {path} must map a model label or sha256 prefix to a dict of metadata")
    return {str(k): v for k, v in data.items()}


def placement_meta(record: ResultRecord, manifest_entry: dict[str, Any] | None) -> dict[str, Any]:
    """Meta used for paper rows; `arch_name` (results.py) is the paper's arch, `arch` in a manifest also works."""
    meta = dict(record.model.get("meta") or {})
    meta.update(manifest_entry or {})
    if "arch" not in meta and meta.get("arch_name"):
        meta["arch"] = meta["arch_name"]
    return meta


def load_results(
    paths: list[str | os.PathLike],
    manifest: dict[str, dict[str, Any]] | None = None,
    *,
    skip_missing: bool = False,
) -> list[Result]:
    """Load every result under ``paths`` (files or folders). A corrupt file raises a one-line error."""
    present = []
    for p in paths:
        if skip_missing and not Path(p).exists():
            print(f"note: {p} does not exist, skipped", file=sys.stderr)
            continue
        present.append(p)
    results = []
    for path in iter_result_paths(present):
        try:
            record = load_result(path)
        except IjepaEvalError as err:
            msg = str(err)
            raise IjepaEvalError(msg if str(path) in msg else f"{path}: {msg}") from None
        result = Result(path, record)
        entry = next((meta for key, meta in (manifest or {}).items() if result.matches_model(key)), None)
        result.meta = placement_meta(record, entry)
        results.append(result)
    return results


def latest_by_model_protocol(results: list[Result]) -> dict[tuple[tuple[str, str, str], str], Result]:
    """One result per (model, protocol): the newest by `date`, ties broken by path, so output is deterministic."""
    chosen: dict[tuple[tuple[str, str, str], str], Result] = {}
    for r in sorted(results, key=lambda r: (str(r.record.date), str(r.path))):
        chosen[(r.model_key, r.protocol)] = r
    return chosen
