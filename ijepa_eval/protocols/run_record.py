"""What the protocol runners (``runner`` for frozen probes, ``finetuning`` for end-to-end fine-tuning,
``attentive`` for attentive probes) share about a run's record: the encoder to evaluate, its model record, the
task name, an earlier identical result to reuse, the folder a training run checkpoints into, and writing a
result with its per-example predictions, intervals and the head it reports (a frozen linear or logreg
probe's head file; an attentive probe's V-JEPA-layout probe file)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ijepa_eval.errors import ConfigError, IjepaEvalError
from ijepa_eval.probes import class_balanced_holdout
from ijepa_eval.probes.attentive import read_probe_file, write_probe_file
from ijepa_eval.probes.headfile import SavedHead, load_head, write_head_file
from ijepa_eval.protocols.recipes import Recipe, load_recipe
from ijepa_eval.results import (
    ResultRecord,
    load_predictions,
    load_result,
    predictions_path,
    result_filename,
    write_predictions,
    write_result,
)
from ijepa_eval.stats import metric_intervals


def encoder_of(ckpt: Any, branch: str | None, arch: str | dict | None, trust_checkpoint: bool) -> Any:
    """The Encoder to evaluate: ``ckpt`` itself when it already is one, else ``load_encoder(ckpt, ...)``."""
    if isinstance(ckpt, torch.nn.Module):
        return ckpt
    from ijepa_eval.encoders import load_encoder

    return load_encoder(ckpt, branch, arch, trust_checkpoint=trust_checkpoint)


def model_record(encoder: Any, label: str | None, model_meta: dict[str, Any] | None) -> dict[str, Any]:
    info = encoder.info
    return {"source": str(info.get("source")), "sha256": info.get("sha256"), "format": info.get("format"),
            "branch": info.get("branch"), "arch": info.get("arch"), "label": label, "meta": dict(model_meta or {})}


def task_name(recipe: Recipe, name_or_yaml: str | os.PathLike) -> str:
    """The recipe's name, plus ``@<dataset>`` when an override points it at another dataset (``knn
    --dataset cifar100``): results on different data must share neither a file nor a table column."""
    default = load_recipe(name_or_yaml).dataset.name
    return recipe.name if recipe.dataset.name == default else f"{recipe.name}@{recipe.dataset.name}"


def existing_result(out_dir: Path, model: dict[str, Any], recipe: Recipe, task: str,
                    seeds: int | None = None) -> Path | None:
    """The result of an earlier run of this exact (model, branch, protocol version, config), if any.

    It must also hold intact per-example predictions (results written before they existed are re-run) and,
    when ``seeds`` is asked for, a spread over that many probe seeds.
    """
    probe = ResultRecord(protocol={"name": recipe.name, "task": task}, model=model, features={}, dataset={},
                         metrics={}, selection={})
    path = out_dir / result_filename(probe)
    if not path.is_file():
        return None
    try:
        old = load_result(path)
        intact = load_predictions(old, path) is not None
        if recipe.probe in ("linear", "logreg"):  # results of these probes keep their head
            intact = intact and old.head_file is not None and load_head(path.parent / old.head_file["file"],
                                                                        old.head_file["sha256"]) is not None
        if recipe.probe == "attentive":  # and attentive results their probe
            intact = intact and old.probe_file is not None and read_probe_file(path.parent / old.probe_file["file"],
                                                                              old.probe_file["sha256"]) is not None
    except IjepaEvalError:
        return None  # unreadable, or its predictions are gone: run again and overwrite atomically
    as_json = json.loads(json.dumps(model.get("arch"), default=str))  # e.g. MSN with --arch final_norm: other features
    same = (old.model.get("sha256") == model["sha256"] and old.model.get("branch") == model["branch"]
            and old.model.get("arch") == as_json
            and old.protocol.get("version") == recipe.version and old.protocol.get("config") == recipe.to_dict())
    seeded = not seeds or (old.seeds or {}).get("n") == seeds
    return path if same and intact and seeded else None


def work_dir_for(cache_dir: str | os.PathLike | None, task: str, model: dict[str, Any], job: str) -> Path:
    """Training checkpoints live in the cache (large, transient): ``CACHE/<job>/<result file stem>``."""
    from ijepa_eval.features.cache import resolve_cache_dir

    probe = ResultRecord(protocol={"name": task, "task": task}, model=model, features={}, dataset={}, metrics={},
                         selection={})
    return resolve_cache_dir(cache_dir) / job / Path(result_filename(probe)).stem


def prepare_work_dir(work_dir: Path, checkpoint: str, *, resume: bool, restart: bool, is_main: bool, job: str,
                     command: str) -> bool:
    """Whether to resume. Refuses to silently overwrite (or silently continue) an earlier run."""
    if restart:
        if is_main and work_dir.exists():
            shutil.rmtree(work_dir)
        return False
    if (work_dir / checkpoint).is_file() and not resume:
        raise ConfigError(f"{work_dir / checkpoint} holds an earlier {job} run of this result; pass --resume to continue "
                          "it (a finished run is evaluated again, not retrained) or --restart to start over "
                          f"(`{command}`)")
    if is_main:
        work_dir.mkdir(parents=True, exist_ok=True)
    return resume


def selection_plan(recipe: Recipe, labels: np.ndarray, choose: bool = True
                   ) -> tuple[np.ndarray, str | None, np.ndarray | None]:
    """(training rows, selection split or None, held-out training rows for 'train_holdout') of a training job
    (fine-tuning, attentive probes). ``choose`` False: nothing to choose (one probe, or the last epoch kept),
    so all of train is trained on. The dataset's own val split is never one its training split contains."""
    sel, ds = recipe.selection, recipe.dataset
    every = np.arange(len(labels))
    if not choose:
        return every, None, None
    if sel.split == "test":
        return every, "test", None
    if ds.val_split:
        if ds.val_split == ds.train_split or ds.train_split == "trainval":
            raise ConfigError(f"protocol {recipe.name} would select on '{ds.val_split}', which its training split "
                              f"'{ds.train_split}' contains; use dataset.train_split=train")
        return every, "val", None
    fit_rows, hold_rows = class_balanced_holdout(labels, sel.holdout_fraction, recipe.seed)
    return fit_rows, "train_holdout", hold_rows


def write_with_predictions(result: ResultRecord, out_dir: Path, labels: np.ndarray, topk: np.ndarray,
                           indices: np.ndarray, head: SavedHead | None = None,
                           probe: Mapping[str, Any] | None = None) -> Path:
    """Write a result with its per-example test predictions and the intervals they give (``stats``).

    Frozen probes, attentive probes and fine-tuning share it so that every result can be paired in
    ``compare`` and carries intervals made the same way (``ci`` records the method): the intervals are seeded
    with the result's (recipe's) seed, and the head or probe file and the predictions are written first, so a
    result JSON never points to a file that is not there yet.
    """
    result.metrics_ci, result.ci = metric_intervals(labels, topk, seed=result.seed)
    if head is not None:  # the head file, then the predictions, then the JSON pointing to both
        head.context["result"] = {"file": result_filename(result), "metrics": dict(result.metrics),
                                  "metrics_ci": dict(result.metrics_ci), "selection": dict(result.selection)}
        result.head_file = write_head_file(out_dir / result_filename(result), head)
    if probe is not None:  # an attentive probe in V-JEPA's checkpoint layout (probes.attentive.vjepa_checkpoint)
        result.probe_file = write_probe_file(out_dir / result_filename(result), probe)
    result.predictions = write_predictions(predictions_path(out_dir / result_filename(result)), labels, topk, indices)
    return write_result(result, out_dir)
