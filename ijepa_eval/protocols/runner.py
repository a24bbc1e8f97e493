"""``run_protocol``: checkpoint + recipe -> cached features -> probe grid -> one result JSON.

A ``probe: finetune`` recipe is handed to ``finetuning.run_finetune``, a ``probe: attentive`` one to
``attentive.run_attentive``; what both runners record the same
way (model, reuse of an identical result, predictions and intervals) is in ``run_record``.

Order matters for honest numbers: with the default selection the reported split's features are not even
requested until the head has been chosen on held-out training data (or the dataset's own val split).
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ijepa_eval.data import describe_transform, get_dataset, train_transform
from ijepa_eval.devices import process_device
from ijepa_eval.env import compute_cost, environment
from ijepa_eval.errors import ConfigError
from ijepa_eval.features import get_features, parse_representation
from ijepa_eval.features.distributed import barrier
from ijepa_eval.probes import class_balanced_holdout, scores_from_topk, select_head
from ijepa_eval.protocols.probing import PROBES
from ijepa_eval.protocols.recipes import Recipe, load_recipe
from ijepa_eval.protocols.run_record import (
    encoder_of,
    existing_result,
    model_record,
    task_name,
    write_with_predictions,
)
from ijepa_eval.results import METRIC_DIRECTIONS, ResultRecord, result_filename
from ijepa_eval.stats import seed_summary
from ijepa_eval.threads import fit_threads


def representation_views(fs: Any, names: list[str]) -> dict[str, torch.Tensor]:
    """Each representation as a column slice of the longest concatenation of its pool: lastPOOL shares
    concatPOOL4's memory (26 GB of ImageNet ViT-H features are not copied twice)."""
    parsed = {r: parse_representation(r, fs.n_last_blocks, fs.pools) for r in names}
    longest = {}
    for r, (pool, n) in parsed.items():
        if pool not in longest or n > parsed[longest[pool]][1]:
            longest[pool] = r
    full = {pool: fs.representation(r) for pool, r in longest.items()}
    out = {}
    for r, (pool, n) in parsed.items():
        width = full[pool].shape[1] // parsed[longest[pool]][1] * n
        out[r] = full[pool][:, -width:]
    return out


def run_protocol(
    name_or_yaml: str | os.PathLike,
    ckpt: Any,
    *,
    branch: str | None = None,
    arch: str | dict | None = None,
    root: str | os.PathLike | None = None,
    out_dir: str | os.PathLike = "results/runs",
    cache_dir: str | os.PathLike | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
    model_meta: dict[str, Any] | None = None,
    skip_existing: bool = True,
    device: str | torch.device | None = None,
    label: str | None = None,
    trust_checkpoint: bool = False,
    num_workers: int | None = None,
    progress: bool = True,
    seeds: int | None = None,
) -> Path:
    """Run one protocol on one checkpoint (path, timm name or Encoder object); returns the result JSON path.

    ``seeds`` N >= 2 also retrains the selected head with seeds seed .. seed+N-1 (grid and selection stay
    as they are) and records the spread of its test metrics.
    """
    started = time.perf_counter()
    if seeds is not None and seeds < 2:
        raise ConfigError(f"--seeds must be at least 2 to measure a spread, got {seeds}")
    recipe = load_recipe(name_or_yaml, overrides)
    if recipe.probe in ("attentive", "finetune"):  # training jobs with their own loop, checkpoints and resume
        if seeds:
            raise ConfigError(f"--seeds retrains a frozen probe's head on cached features; {recipe.name} trains "
                              f"{'attentive probes' if recipe.probe == 'attentive' else 'the whole network'}, "
                              "which has no cheap head to retrain (run it once per seed=)")
        from ijepa_eval.protocols.attentive import run_attentive
        from ijepa_eval.protocols.finetuning import run_finetune

        run = run_attentive if recipe.probe == "attentive" else run_finetune
        return run(name_or_yaml, ckpt, branch=branch, arch=arch, root=root, out_dir=out_dir, cache_dir=cache_dir,
                   overrides=overrides, model_meta=model_meta, skip_existing=skip_existing, device=device,
                   label=label, trust_checkpoint=trust_checkpoint, num_workers=num_workers, progress=progress)
    unknown = sorted(set(recipe.metrics) - set(METRIC_DIRECTIONS))
    if unknown:
        raise ConfigError(f"recipe {recipe.name} lists metrics {unknown} that results.METRIC_DIRECTIONS lacks")
    # Under torchrun each process takes its own GPU: the processes share the extraction, then every one trains
    # the same probes on its cached features (cheap next to extraction) and rank 0 writes the result.
    rank, world_size, dev = process_device(device)
    if recipe.aug == "paper" and world_size > 1:
        raise ConfigError(f"aug=paper re-encodes the training images every epoch in one process and cannot share "
                          f"that work among {world_size} torchrun processes; run it without torchrun (one GPU)")
    encoder = encoder_of(ckpt, branch, arch, trust_checkpoint)
    model = model_record(encoder, label, model_meta)
    out_dir = Path(out_dir)
    task = task_name(recipe, name_or_yaml)
    if skip_existing and (path := existing_result(out_dir, model, recipe, task, seeds)):
        if rank == 0:
            print(f"skip: {path} already holds {recipe.name} v{recipe.version} for this model and config")
        return path
    ds_spec = recipe.dataset
    representations = recipe.cls_representations if encoder.has_class_token else recipe.representations

    feature_sets: dict[str, Any] = {}
    datasets: dict[str, Any] = {}
    split_info: dict[str, Any] = {}  # provenance of a subset's split file (ImageNet 1%/10%)

    def features_of(split: str):
        if split not in feature_sets:
            dataset = datasets[split] = get_dataset(ds_spec.name, root, split, **ds_spec.options)
            if getattr(dataset, "split_info", None):
                split_info[split] = dataset.split_info
            feature_sets[split] = get_features(
                encoder, dataset, cache_dir=cache_dir, batch_size=recipe.extraction_batch_size,
                num_workers=num_workers, device=dev, n_last_blocks=recipe.n_last_blocks, progress=progress,
                decode=recipe.decode)
        fs = feature_sets[split]
        return representation_views(fs, representations), fs.labels, fs

    train_feats, train_labels, train_fs = features_of(ds_spec.train_split)
    fit_threads(0)  # probes train in this process alone: every free core
    probe = PROBES[recipe.probe](recipe, representations, train_fs.num_classes, dev, progress)
    probe_started = time.perf_counter()

    def fit(probe, feats, labels, rows) -> None:
        if recipe.aug == "paper":  # rows index the training split (Recipe refuses retraining on train+val)
            dataset = get_dataset(ds_spec.name, root, ds_spec.train_split, decode=recipe.decode,
                                  transform=train_transform(ds_spec.name, encoder.img_size, normalize=False),
                                  **ds_spec.options)
            probe.fit_augmented(encoder, dataset, train_fs.indices[rows], num_workers=num_workers)
        else:
            probe.fit(feats, labels, rows)

    heads = [dict(h, scores={}) for h in probe.heads]

    def record(split: str, scores: list[dict[str, float]]) -> None:
        for head, s in zip(heads, scores, strict=True):
            head["scores"][split] = s

    all_train = np.arange(len(train_labels))
    sel = recipe.selection
    final = (train_feats, train_labels, all_train)  # what the reported probe is trained on
    if sel.split == "test":
        fit(probe, *final)
        test_feats, test_labels, test_fs = features_of(ds_spec.test_split)
        test_topk = probe.predict(test_feats, test_labels)
        test_scores = scores_from_topk(test_topk, torch.from_numpy(test_labels), probe.num_classes)
        best = select_head(test_scores, sel.metric, METRIC_DIRECTIONS[sel.metric])
        selection_split = "test"
    else:
        if ds_spec.val_split:  # the dataset's own held-out split (VTAB val for CLEVR)
            hold_feats, hold_labels, _ = features_of(ds_spec.val_split)
            fit(probe, train_feats, train_labels, all_train)
            hold_scores = probe.score(hold_feats, hold_labels)
            selection_split = "val"
        else:
            fit_rows, hold_rows = class_balanced_holdout(train_labels, sel.holdout_fraction, recipe.seed)
            final = (train_feats, train_labels, fit_rows)
            fit(probe, *final)
            hold_scores = probe.score(train_feats, train_labels, hold_rows)
            selection_split = "train_holdout"
        record(selection_split, hold_scores)
        best = select_head(hold_scores, sel.metric, METRIC_DIRECTIONS[sel.metric])
        if sel.retrain_on_full_train:  # the whole grid: jointly it costs about one head
            if ds_spec.val_split:  # aug=paper cannot merge splits: Recipe refuses that combination
                merged = {r: torch.cat([train_feats[r], hold_feats[r]]) for r in representations}
                merged_labels = np.concatenate([train_labels, hold_labels])
                final = (merged, merged_labels, np.arange(len(merged_labels)))
            else:
                final = (train_feats, train_labels, all_train)
            fit(probe, *final)
        test_feats, test_labels, test_fs = features_of(ds_spec.test_split)  # only now: selection is done
        test_topk = probe.predict(test_feats, test_labels)
        test_scores = scores_from_topk(test_topk, torch.from_numpy(test_labels), probe.num_classes)
    pool = "cls" if encoder.has_class_token else "avg"
    classes = datasets[ds_spec.train_split].classes or [str(c) for c in range(train_fs.num_classes)]
    head = probe.export_head(best, list(classes), head_context(model, recipe, encoder, train_fs, pool))
    if head is None:
        predicted = test_topk[best].cpu().numpy()
    else:  # the reported predictions are the saved head's own, so re-applying it reproduces them bit for bit
        head_topk = head.topk(test_feats[head.representation], dev)
        test_scores[best] = scores_from_topk(head_topk[None], torch.from_numpy(test_labels), probe.num_classes)[0]
        predicted = head_topk.numpy()
    seed_runs = None
    if seeds:
        seed_runs = seed_spread(recipe, heads[best], seeds, lambda p: fit(p, *final),
                                lambda p: p.score(test_feats, test_labels)[0], train_fs.num_classes, dev, progress)
    if probe.train_scores():
        record("train", probe.train_scores())
    record("test", test_scores)
    probe_s = time.perf_counter() - probe_started

    extraction_s = sum(float(fs.meta.get("extraction_s", 0.0)) for fs in feature_sets.values())
    total_s = time.perf_counter() - started
    timings = {"extraction_s": round(extraction_s, 3), "probe_s": round(probe_s, 3), "total_s": round(total_s, 3),
               **compute_cost(total_s, dev, processes())}
    result = ResultRecord(
        protocol={"name": recipe.name, "task": task, "version": recipe.version, "config": recipe.to_dict(),
                  "reference": recipe.reference, "deviations": list(recipe.deviations)},
        model=model,
        features={"representations": representations, "n_last_blocks": recipe.n_last_blocks, "pool": pool,
                  "img_size": encoder.img_size, "transform": describe_transform(ds_spec.name, encoder.img_size),
                  "decode": recipe.decode,
                  "cache_key": {s: fs.meta.get("cache_key") for s, fs in feature_sets.items()},
                  "mode": "augmented" if recipe.aug == "paper" else "cached"},
        dataset={"name": ds_spec.name, "train_split": ds_spec.train_split, "val_split": ds_spec.val_split,
                 "test_split": ds_spec.test_split, "num_classes": int(train_fs.num_classes),
                 "fingerprint": {s: fs.meta.get("fingerprint") for s, fs in feature_sets.items()},
                 "sizes": {s: len(fs) for s, fs in feature_sets.items()},
                 **({"split_info": split_info[ds_spec.train_split]} if ds_spec.train_split in split_info else {})},
        metrics=dict(test_scores[best]),
        selection={"split": selection_split, "head": heads[best]["name"], "metric": sel.metric,
                   "retrained_on_full_train": sel.split != "test" and sel.retrain_on_full_train},
        heads=heads,
        env=environment(),
        timings=timings,
        seed=recipe.seed,
        probe=recipe.probe,
        optimizer=recipe.train_config().lr_record() if recipe.probe == "linear" else None,
        seeds=seed_runs,
    )
    path = out_dir / result_filename(result)
    if rank == 0:
        path = write_with_predictions(result, out_dir, test_labels, predicted, test_fs.indices, head)
    barrier(dev)  # under torchrun: no process returns the path before the file is there
    return path


def head_context(model: dict[str, Any], recipe: Recipe, encoder: Any, train_fs: Any, pool: str) -> dict[str, Any]:
    """What a saved head needs from the features it reads: checked by ``ijepa-eval shift`` before applying it."""
    return {"encoder": {k: model.get(k) for k in ("source", "sha256", "branch", "arch")},
            "features": {"n_last_blocks": recipe.n_last_blocks, "pool": pool, "img_size": encoder.img_size,
                         "transform": describe_transform(recipe.dataset.name, encoder.img_size)},
            "dataset": {"name": recipe.dataset.name, "train_split": recipe.dataset.train_split,
                        "fingerprint": train_fs.meta.get("fingerprint")},
            "protocol": {"name": recipe.name, "version": recipe.version}}


def processes() -> int:
    """Ranks this run occupies: torchrun shards extraction over every rank's device."""
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def seed_spread(recipe: Recipe, head: dict[str, Any], n: int, fit: Any, score: Any, num_classes: int,
                device: torch.device, progress: bool) -> dict[str, Any]:
    """The selected head alone, retrained with seeds seed .. seed+n-1 on the reported probe's data.

    A head trained alone equals the same head trained in the grid (probes.linear), so the first seed
    reproduces the reported numbers; kNN, and logistic regression from its fixed start, do not depend on
    the seed unless kNN subsamples shots, so their spread is 0.
    """
    kind = PROBES[recipe.probe]
    seeds = [recipe.seed + i for i in range(n)]
    runs = []
    for s in seeds:
        one = dataclasses.replace(kind.narrow(recipe, head), seed=s)
        probe = kind(one, [head["representation"]], num_classes, device, progress)
        fit(probe)
        runs.append(score(probe))
    out: dict[str, Any] = {"n": n, "seeds": seeds, "head": head["name"]}
    for metric in runs[0]:
        values = [r[metric] for r in runs]
        out[metric] = {**seed_summary(values), "values": values}
    return out
