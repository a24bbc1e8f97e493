"""``run_finetune``: checkpoint + ``probe: finetune`` recipe -> fine-tuned classifier -> one result JSON.

The protocol side of fine-tuning, beside ``runner`` (frozen probes): it reads the recipe, plans the splits
and writes the result; the training itself is ``ijepa_eval.finetune`` (model, loop, checkpoints), which
knows nothing of recipes. ``run_protocol`` hands ``probe: finetune`` recipes here.

Honest numbers: with ``finetune.keep: last`` no choice is made (all of the training split, the recipe's
epochs, the last weights); with ``keep: best`` the epoch is chosen on a class-balanced held-out part of
the training split (or the dataset's own val split). Either way the reported split is opened only after
training has finished — unless ``selection.split: test`` asks for the paper's convention (MAE's
main_finetune prints the best val accuracy over epochs), which the result then records.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ijepa_eval.data import describe_transform, eval_transform, get_dataset
from ijepa_eval.devices import process_device
from ijepa_eval.env import compute_cost, environment
from ijepa_eval.errors import ConfigError
from ijepa_eval.finetune.config import batch_plan, default_micro_batch
from ijepa_eval.finetune.model import build_classifier, train_transform
from ijepa_eval.finetune.train import LATEST, SeededItems, best_path, fit, predict, scores
from ijepa_eval.protocols.finetune_widths import for_width
from ijepa_eval.protocols.recipes import Recipe, load_recipe
from ijepa_eval.protocols.run_record import (
    encoder_of,
    existing_result,
    model_record,
    prepare_work_dir,
    selection_plan,
    task_name,
    work_dir_for,
    write_with_predictions,
)
from ijepa_eval.results import ResultRecord, result_filename


def run_finetune(
    name_or_yaml: str | os.PathLike | Recipe,
    ckpt: Any,
    *,
    branch: str | None = None,
    arch: str | dict | None = None,
    root: str | os.PathLike | None = None,
    out_dir: str | os.PathLike = "results/runs",
    cache_dir: str | os.PathLike | None = None,
    work_dir: str | os.PathLike | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
    model_meta: dict[str, Any] | None = None,
    skip_existing: bool = True,
    resume: bool = False,
    restart: bool = False,
    device: str | torch.device | None = None,
    label: str | None = None,
    trust_checkpoint: bool = False,
    num_workers: int | None = None,
    progress: bool = True,
) -> Path:
    """Fine-tune one checkpoint with one recipe (same command under torchrun); returns the result JSON path."""
    from ijepa_eval.features.distributed import default_workers
    from ijepa_eval.features.planning import check_dataset
    from ijepa_eval.features.planning import describe_transform as transform_text

    started = time.perf_counter()
    recipe = load_recipe(name_or_yaml, overrides)
    if recipe.probe != "finetune":
        raise ConfigError(f"protocol {recipe.name} is a frozen '{recipe.probe}' probe; run it with `ijepa-eval run`")
    rank, world_size, dev = process_device(device)  # under torchrun: cuda:LOCAL_RANK, process group joined
    is_main = rank == 0
    encoder = encoder_of(ckpt, branch, arch, trust_checkpoint)
    recipe, sizes = for_width(name_or_yaml, encoder.embed_dim, overrides)  # per-size settings of the reference
    if is_main and sizes["listed"] and not sizes["matched"]:
        print(f"note: {recipe.name} lists settings for widths {', '.join(sizes['listed'])}, not "
              f"{sizes['width']}; using the recipe's base values")
    model = model_record(encoder, label, model_meta)
    task = task_name(recipe, name_or_yaml)
    out_dir = Path(out_dir)
    if skip_existing and (path := existing_result(out_dir, model, recipe, task)):
        if is_main:
            print(f"skip: {path} already holds {recipe.name} v{recipe.version} for this model and config")
        return path
    work = Path(work_dir) if work_dir else work_dir_for(cache_dir, task, model, "finetune")
    resume = prepare_work_dir(work, LATEST, resume=resume, restart=restart, is_main=is_main, job="fine-tuning",
                              command="ijepa-eval finetune")
    if world_size > 1:
        torch.distributed.barrier()  # rank 0 has created (or cleared) the folder

    spec, ds, sel = recipe.finetune, recipe.dataset, recipe.selection
    workers = default_workers(world_size) if num_workers is None else num_workers
    img = encoder.img_size
    tokens = (img // encoder.patch_size) ** 2 + encoder.num_prefix_tokens
    plan = batch_plan(recipe.batch_size, world_size, spec.micro_batch or default_micro_batch(encoder.embed_dim, tokens))
    if is_main and progress:
        print(f"finetune: {plan.global_batch} images per step = {world_size} process(es) x {plan.accum_steps} "
              f"micro-batch(es) of {plan.micro_batch} (finetune.micro_batch=N sets the most one device takes)")

    def split_dataset(split: str, transform=None):
        dataset = get_dataset(ds.name, root, split, transform=transform, **ds.options)
        check_dataset(dataset)
        return dataset

    train_raw = split_dataset(ds.train_split)
    num_classes = train_raw.num_classes
    fit_rows, selection_split, hold_rows = selection_plan(recipe, np.asarray(train_raw.labels),
                                                          choose=spec.keep != "last")
    with torch.random.fork_rng(devices=[]):  # the head's init is part of the seeded run
        torch.manual_seed(recipe.seed)
        classifier = build_classifier(encoder, num_classes, spec)
    evaluate = None
    if selection_split is not None:
        sel_split = {"train_holdout": ds.train_split, "val": ds.val_split, "test": ds.test_split}[selection_split]
        sel_data = split_dataset(sel_split, eval_transform(ds.name, img, normalize=False))
        sel_rows = hold_rows if hold_rows is not None else np.arange(len(sel_data))

        def evaluate(net):
            topk, labels = predict(net, sel_data, sel_rows, spec.eval_batch_size, dev, world_size, rank, workers,
                                   progress and is_main, desc=f"eval {selection_split}")
            return scores(topk, labels, num_classes)

    identity = {"config": recipe.to_dict(), "encoder_sha256": model["sha256"], "world_size": world_size}
    state = fit(
        classifier, SeededItems(train_raw, train_transform(spec, img, normalize=False), recipe.seed), fit_rows,
        num_classes, spec=spec, epochs=recipe.epochs, plan=plan, seed=recipe.seed, device=dev, rank=rank,
        work_dir=work, identity=identity, resume=resume, num_workers=workers, progress=progress,
        evaluate=evaluate, select_metric=sel.metric,
    )
    kept = state.best["epoch"] if selection_split is not None else state.epoch
    if selection_split is not None:
        classifier.load_state_dict(torch.load(best_path(work, kept), map_location=dev, weights_only=True))

    test_started = time.perf_counter()
    test_data = split_dataset(ds.test_split, eval_transform(ds.name, img, normalize=False))  # only now: training is over
    topk, labels = predict(classifier, test_data, np.arange(len(test_data)), spec.eval_batch_size, dev, world_size,
                           rank, workers, progress and is_main, desc="eval test")
    test_scores = scores(topk, labels, num_classes)
    test_s = time.perf_counter() - test_started

    pool = spec.pool_for(encoder.has_class_token)
    rep = "lastCLS" if pool == "cls" else "lastPOOL"
    heads = []
    for row in state.history:
        head = {"name": f"epoch {row['epoch'] + 1}", "representation": rep, "head": "finetune",
                "epoch": row["epoch"] + 1, "lr": row["lr"], "scores": {"train": {"loss": row["train_loss"]}}}
        if "selection_scores" in row:
            head["scores"][selection_split] = row["selection_scores"]
        if row["epoch"] + 1 == kept:
            head["scores"]["test"] = test_scores
        heads.append(head)
    wall_s = state.elapsed_s + test_s
    lr = spec.effective_lr(recipe.batch_size)
    result = ResultRecord(
        protocol={"name": recipe.name, "task": task, "version": recipe.version, "config": recipe.to_dict(),
                  "reference": recipe.reference, "deviations": list(recipe.deviations),
                  **({"by_width": sizes} if sizes["listed"] else {})},
        model=model,
        features={"representations": [rep], "n_last_blocks": 1, "pool": pool,
                  "head_norm": spec.head_norm, "img_size": img, "mode": "finetune", "decode": recipe.decode,
                  "transform": {"train": transform_text(train_transform(spec, img)),
                                "eval": describe_transform(ds.name, img)}},
        dataset={"name": ds.name, "train_split": ds.train_split, "val_split": ds.val_split,
                 "test_split": ds.test_split, "num_classes": int(num_classes),
                 "fingerprint": {ds.train_split: train_raw.fingerprint(), ds.test_split: test_data.fingerprint()},
                 "sizes": {ds.train_split: len(train_raw), "fit": len(fit_rows), ds.test_split: len(test_data),
                           **({"holdout": len(hold_rows)} if hold_rows is not None else {})},
                 **({"split_info": train_raw.split_info} if getattr(train_raw, "split_info", None) else {})},
        metrics=dict(test_scores),
        selection={"split": selection_split or "none", "head": f"epoch {kept}",
                   "metric": sel.metric if selection_split else None, "retrained_on_full_train": False},
        heads=heads,
        env=environment(),
        timings={"train_s": round(state.elapsed_s, 3), "test_s": round(test_s, 3), "wall_s": round(wall_s, 3),
                 "total_s": round(time.perf_counter() - started, 3), **compute_cost(wall_s, dev, world_size)},
        seed=recipe.seed,
        adaptation="finetune",
        probe="finetune",
        optimizer={"name": "adamw", "base_lr": spec.blr if spec.lr is None else None, "base_batch": spec.base_batch,
                   "effective_lr": lr, **plan.record(), "layer_decay": spec.layer_decay,
                   "weight_decay": spec.weight_decay},
    )
    path = out_dir / result_filename(result)
    if is_main:  # every rank holds all predictions (predict gathers them in dataset order); one writes
        path = write_with_predictions(result, out_dir, labels.numpy(), topk.numpy(), np.arange(len(test_data)))
    if world_size > 1:
        torch.distributed.barrier()
    return path
