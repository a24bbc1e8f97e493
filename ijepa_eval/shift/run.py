"""``run_shift``: one frozen-probe result's reported ImageNet head on the shift sets, one result JSON per set.

The order keeps failures cheap: every requested set's layout is checked (all datasets are listed, ReaL's
file read) before the first image is decoded; then each set's features come from the shared cache through
the head's own encoder, representation and transform, and the saved head turns them into predictions.
ReaL relabels ImageNet val, so it reads the IN-val features the ImageNet result already cached.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ijepa_eval.data import describe_transform, get_dataset
from ijepa_eval.data.imagenet_tables import alexnet_errors
from ijepa_eval.data.real import load_real
from ijepa_eval.data.roots import resolve_root
from ijepa_eval.devices import process_device
from ijepa_eval.env import compute_cost, environment
from ijepa_eval.errors import ConfigError, IjepaEvalError, unknown_choice
from ijepa_eval.features import get_features
from ijepa_eval.io import sha256_file
from ijepa_eval.protocols.run_record import model_record
from ijepa_eval.results import (
    ResultRecord,
    load_predictions,
    load_result,
    predictions_path,
    result_filename,
    write_predictions,
    write_result,
)
from ijepa_eval.shift.metrics import corruption_intervals, corruption_metrics, real_intervals, real_metrics
from ijepa_eval.shift.recipes import ShiftRecipe, shift_recipe, shift_recipes
from ijepa_eval.shift.source import HeadSource, check_fits, from_file, from_result
from ijepa_eval.stats import metric_intervals, point_metrics

ROOT_KEYS = ("imagenet", "v2")  # --root keys besides set names: ImageNet (val, for ReaL) and all three V2 variants


@dataclass
class SetPlan:
    """One set, ready to run: its datasets (split, dataset) and, for ReaL, the label lists of the val rows."""

    recipe: ShiftRecipe
    datasets: list[tuple[str, Any]]
    classes_mode: str = "all"
    real: np.ndarray | None = None
    real_info: dict[str, Any] = field(default_factory=dict)


def parse_roots(items: list[str] | None) -> dict[str, str]:
    """``["a=/data/imagenet-a", ...]`` -> {set: path}; keys are set names, ``v2`` (all variants) or ``imagenet``."""
    roots = {}
    known = (*shift_recipes(), *ROOT_KEYS)
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not value:
            raise ConfigError(f"--root '{item}' is not SET=PATH (e.g. a=/data/imagenet-a or imagenet=/data/imagenet)")
        if key not in known:
            raise ConfigError(unknown_choice("--root set", key, known))
        roots[key] = value
    return roots


def plan_set(recipe: ShiftRecipe, roots: dict[str, str], classes: list[str], *, all_classes: bool = False,
             corruptions: list[str] | None = None) -> SetPlan:
    """List the set's images (checking the layout) in the head's label space; nothing is decoded."""
    root = roots.get(recipe.set) or (roots.get("v2") if recipe.set.startswith("v2-") else None)
    if root is None and recipe.set != "real":
        root = str(resolve_root(recipe.dataset.name, flag=f"--root {recipe.set}=DIR"))
    if recipe.set == "real":
        val = get_dataset("imagenet", roots.get("imagenet"), "val")
        if val.classes != classes:
            raise ConfigError(f"ImageNet val under {val.root} has other classes than the head ({len(val.classes)} vs "
                              f"{len(classes)}); pass --root imagenet=PATH of the ImageNet it was trained on")
        where = root if root and Path(root).is_file() else resolve_root("imagenet_real", root, "--root real=PATH")
        real, info = load_real(where, val.files, len(classes))
        return SetPlan(recipe, [("val", val)], real=real, real_info=info)
    mode = "all" if all_classes else recipe.classes  # --all-classes changes ImageNet-A/-R only
    splits = recipe.splits(corruptions)
    datasets = [(s, get_dataset(recipe.dataset.name, root, s, classes=classes)) for s in splits]
    return SetPlan(recipe, datasets, classes_mode=mode)


def score_set(plan: SetPlan, predicted: list[tuple[str, Any, np.ndarray]],
              seed: int) -> tuple[dict, dict, dict, dict]:
    """(metrics, metrics_ci, ci record, extra shift record) of one set from its (split, features, top-5) triples.

    Intervals as ``stats`` chooses them for any test split; ReaL's and ImageNet-C's own resampling follows the
    same design rule (``shift.metrics``).
    """
    if plan.real is not None:
        _, fs, topk = predicted[0]
        real = plan.real[fs.indices]
        m = real_metrics(topk, real)
        extra = {"real": plan.real_info | {k: m.pop(k) for k in ("n_images", "n_excluded", "n_evaluated")}}
        return m, *real_intervals(topk, real, fs.labels, seed=seed), extra
    if plan.recipe.dataset.name == "imagenet_c":
        alex = alexnet_errors()
        hits: dict[str, list[np.ndarray]] = {}
        labels: dict[str, list[np.ndarray]] = {}
        names = set()
        for split, fs, topk in predicted:
            hits.setdefault(split.split("/")[0], []).append(topk[:, 0] == fs.labels)
            labels.setdefault(split.split("/")[0], []).append(fs.labels)
            ds = dict(plan.datasets)[split]
            names.add(tuple(Path(ds.files[i]).name for i in fs.indices))
        m = corruption_metrics(hits, alex)
        ci, record = corruption_intervals(hits, labels, alex, paired=len(names) == 1, seed=seed)
        metrics = {k: v for k, v in (("top1", m["mean_top1"]), ("mce", m["mce"])) if v is not None}
        cis = {k: ci[src] for k, src in (("top1", "mean_top1"), ("mce", "mce")) if src in ci}
        extra = {"corruptions": {**m, "ci": {k: v for k, v in ci.items() if k.startswith("error/")},
                                 "paired": len(names) == 1}}
        return metrics, cis, record, extra
    (_, fs, topk), = predicted
    return point_metrics(fs.labels, topk), *metric_intervals(fs.labels, topk, seed=seed), {}


def reported_result(source: HeadSource) -> dict[str, Any]:
    """What the head's ImageNet result says of itself: its file, metrics, intervals, selection, seeds."""
    if source.result is not None:
        r = source.result
        return {"file": source.result_path.name if source.result_path else None, "metrics": r.metrics,
                "metrics_ci": r.metrics_ci or {}, "selection": r.selection, "seeds": r.seeds or {}}
    return source.head.context.get("result") or {}


def in_val_record(source: HeadSource) -> dict[str, Any] | None:
    """The head's own ImageNet val number for the tables (its result, else the head file's context): top-1, its
    interval and, where probe seeds ran, their spread."""
    reported = reported_result(source)
    if "metrics" not in reported:
        return None
    spread = (reported.get("seeds") or {}).get("top1")
    return {"top1": reported["metrics"].get("top1"), "top1_ci": (reported.get("metrics_ci") or {}).get("top1"),
            "top1_seed_std": spread.get("std") if isinstance(spread, dict) else None, "source": reported.get("file")}


def task_of(plan: SetPlan, corruptions: list[str] | None) -> str:
    """The recipe's name, marked when the run differs from the recipe's default (so files never collide)."""
    task = plan.recipe.name
    if plan.classes_mode != plan.recipe.classes:
        task += "@all-classes"
    if corruptions is not None and list(corruptions) != plan.recipe.corruptions:
        task += "@" + "+".join(corruptions)
    return task


def run_shift(
    sets: list[str],
    *,
    result: str | os.PathLike | None = None,
    ckpt: Any = None,
    head: str | os.PathLike | None = None,
    branch: str | None = None,
    arch: str | dict | None = None,
    roots: dict[str, str] | None = None,
    all_classes: bool = False,
    corruptions: list[str] | None = None,
    out_dir: str | os.PathLike = "results/runs",
    cache_dir: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    batch_size: int = 64,
    num_workers: int | None = None,
    trust_checkpoint: bool = False,
    skip_existing: bool = True,
    progress: bool = True,
) -> list[Path]:
    """Evaluate a saved head on every set of ``sets``; returns the result JSON paths, one per set.

    The head comes from ``result`` (a frozen linear/logreg result JSON; its encoder is reloaded from the
    result's model record unless ``ckpt`` is given) or from ``head`` (a head file) with ``ckpt``.
    """
    if (result is None) == (head is None) or (head is not None and ckpt is None):
        raise ConfigError("give --result R.json, or --ckpt CKPT with --head HEAD.safetensors")
    source = from_result(result) if result is not None else from_file(head)
    recipes = [shift_recipe(s) for s in dict.fromkeys(sets)]
    if not recipes:
        raise ConfigError(unknown_choice("shift set", "", shift_recipes()))
    if all_classes and not any(r.classes == "subset" for r in recipes):
        raise ConfigError("--all-classes applies to ImageNet-A and -R only; add a or r to --sets")
    if corruptions is not None and not any(r.dataset.name == "imagenet_c" for r in recipes):
        raise ConfigError("--corruptions applies to ImageNet-C only; add c to --sets")
    classes = source.head.classes
    roots = roots or {}
    plans = [plan_set(r, roots, classes, all_classes=all_classes, corruptions=corruptions) for r in recipes]

    encoder = load_head_encoder(source, ckpt, branch, arch, trust_checkpoint)
    for plan in plans:
        check_fits(source, encoder, plan.datasets[0][1].name)
    _, world_size, dev = process_device(device)
    if world_size > 1:
        raise ConfigError("ijepa-eval shift runs in one process (one result per set); run it without torchrun")
    n_blocks = int((source.head.context.get("features") or {}).get("n_last_blocks", 4))
    model = model_of(source, encoder)
    out_dir, written = Path(out_dir), []
    for plan in tqdm(plans, desc="shift sets", unit="set", disable=not progress or len(plans) == 1):
        started = time.perf_counter()
        run_corruptions = corruptions if plan.recipe.dataset.name == "imagenet_c" else None
        task = task_of(plan, run_corruptions)
        config = {**dataclasses.asdict(plan.recipe), "classes": plan.classes_mode, "corruptions_run": run_corruptions}
        probe = ResultRecord(protocol={"name": plan.recipe.name, "task": task}, model=model, features={},
                             dataset={}, metrics={}, selection={})
        path = out_dir / result_filename(probe)
        if skip_existing and _same_run(path, plan.recipe, config, source.sha256):
            print(f"skip: {path} already holds {task} for this head")
            written.append(path)
            continue
        predicted = []
        for split, dataset in plan.datasets:
            fs = get_features(encoder, dataset, cache_dir=cache_dir, batch_size=batch_size, num_workers=num_workers,
                              device=dev, n_last_blocks=n_blocks, progress=progress)
            allowed = getattr(dataset, "allowed_classes", None) if plan.classes_mode == "subset" else None
            topk = source.head.topk(fs.representation(source.head.representation), dev, allowed).numpy()
            predicted.append((split, fs, topk))
        metrics, cis, ci, extra = score_set(plan, predicted, seed=0)
        total_s = time.perf_counter() - started
        sizes = {split: len(fs) for split, fs, _ in predicted}
        record = ResultRecord(
            protocol={"name": plan.recipe.name, "task": task, "version": plan.recipe.version, "config": config,
                      "reference": plan.recipe.reference, "deviations": list(plan.recipe.deviations)},
            model=model,
            features={"representations": [source.head.representation], "n_last_blocks": n_blocks,
                      "pool": "cls" if "CLS" in source.head.representation else "avg", "img_size": encoder.img_size,
                      "transform": describe_transform(plan.datasets[0][1].name, encoder.img_size),
                      "cache_key": {s: fs.meta.get("cache_key") for s, fs, _ in predicted}, "mode": "cached"},
            dataset={"name": plan.datasets[0][1].name, "test_split": ",".join(sizes) if len(sizes) < 4 else
                     f"{len(sizes)} splits", "num_classes": len(classes),
                     "fingerprint": {s: fs.meta.get("fingerprint") for s, fs, _ in predicted}, "sizes": sizes},
            metrics=metrics,
            selection=dict(reported_result(source).get("selection") or {"split": None, "head": source.path.name}),
            env=environment(),
            timings={"total_s": round(total_s, 3), **compute_cost(total_s, dev)},
            metrics_ci=cis,
            ci=ci,
            shift={"set": plan.recipe.set, "classes": plan.classes_mode, "documented_size": plan.recipe.size,
                   "val_images": plan.recipe.val_images,
                   "size": sum(sizes.values()), "splits": sizes,
                   "head": {"file": source.path.name, "sha256": source.sha256, "kind": source.head.kind,
                            "representation": source.head.representation},
                   "source_result": None if source.result_path is None else
                   {"file": source.result_path.name, "sha256": sha256_file(source.result_path),
                    "protocol": source.result.protocol.get("task") or source.result.protocol["name"]},
                   "in_val": in_val_record(source), **extra},
        )
        labels = np.concatenate([fs.labels for _, fs, _ in predicted])
        topk = np.concatenate([t for _, _, t in predicted])
        indices = np.concatenate([fs.indices for _, fs, _ in predicted])
        record.predictions = write_predictions(predictions_path(out_dir / result_filename(record)), labels, topk,
                                               indices)
        written.append(write_result(record, out_dir))
    return written


def load_head_encoder(source: HeadSource, ckpt: Any, branch: str | None, arch: Any, trust: bool) -> Any:
    """The encoder the head's features come from: ``ckpt`` when given, else the result's own model."""
    from ijepa_eval.encoders import load_encoder

    if ckpt is None:
        m = source.result.model
        ckpt, branch, arch = m["source"], branch or m.get("branch"), arch or m.get("arch")
        if isinstance(arch, dict):
            arch = {k: v for k, v in arch.items() if v is not None}
    return ckpt if isinstance(ckpt, torch.nn.Module) else load_encoder(ckpt, branch, arch, trust_checkpoint=trust)


def model_of(source: HeadSource, encoder: Any) -> dict[str, Any]:
    """The result's model record (label and placement meta kept), else one from the encoder."""
    return dict(source.result.model) if source.result is not None else model_record(encoder, None, None)


def _same_run(path: Path, recipe: ShiftRecipe, config: dict, head_sha: str) -> bool:
    if not path.is_file():
        return False
    try:
        old = load_result(path)
        intact = load_predictions(old, path) is not None
    except IjepaEvalError:
        return False
    return (intact and old.protocol.get("version") == recipe.version and old.protocol.get("config") == config
            and (old.shift or {}).get("head", {}).get("sha256") == head_sha)
