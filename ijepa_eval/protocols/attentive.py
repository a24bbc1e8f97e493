"""``run_attentive``: checkpoint + ``probe: attentive`` recipe -> V-JEPA's attentive probes -> one result JSON.

The protocol side of attentive probing, beside ``runner`` (linear, logistic, kNN) and ``finetuning``: it
reads the recipe, plans the splits, runs the grid (``probes.attentive_grid``) either **online** (the frozen
encoder re-run on freshly augmented images every step: ``attentive_train``, V-JEPA's protocol) or on
**cached** last-layer patch tokens (no augmentation; a different protocol, recorded as ``<name>_cached``),
and writes the result.

Honest numbers: one probe is trained on all of the training split and its last epoch is reported, nothing
chosen. A grid is trained on the training split minus a class-balanced held-out 10% (or beside the dataset's
own val split), the probe is chosen there, and the reported split is opened once, after training — unless
``selection.split: test`` asks for V-JEPA 2's convention, which the result then records.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ijepa_eval.data import eval_transform, get_dataset, train_transform, vjepa_erasing, vjepa_transform
from ijepa_eval.devices import process_device
from ijepa_eval.env import compute_cost, environment
from ijepa_eval.errors import ConfigError
from ijepa_eval.features import get_features, lent_encoder, tokens_bytes
from ijepa_eval.features.cache import MAX_TOKENS_GB
from ijepa_eval.features.distributed import default_workers
from ijepa_eval.features.planning import check_dataset, describe_transform
from ijepa_eval.finetune.train import SeededItems, predict
from ijepa_eval.probes import scores_from_topk, select_head
from ijepa_eval.probes.attentive import vjepa_checkpoint
from ijepa_eval.probes.attentive_grid import AttentiveGrid, fit_on_tokens, grid_members, predict_tokens
from ijepa_eval.protocols.attentive_train import LATEST, EncodedGrid, fit_online, steps_per_epoch
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
from ijepa_eval.threads import fit_threads

EVAL_BATCH = 256
CACHED_DEVIATION = ("features: attentive.tokens=cached: last-layer patch tokens of the eval transform are stored once and "
                    "the probes train on them without augmentation, a different protocol (<name>_cached); V-JEPA "
                    "re-encodes freshly augmented images every step")


def transforms_of(recipe: Recipe, img_size: int) -> tuple[Any, Any]:
    """(train, eval) transforms ending at uint8 (the device normalises, ``features.encoding``): V-JEPA's, or
    the dataset's VISSL ones (CLEVR: whole image, no crop)."""
    if recipe.attentive.transforms == "vjepa":
        return vjepa_transform(img_size, train=True, normalize=False), vjepa_transform(img_size, normalize=False)
    name = recipe.dataset.name
    return train_transform(name, img_size, normalize=False), eval_transform(name, img_size, normalize=False)


def check_cache_size(encoder: Any, sizes: dict[str, int], max_cache_gb: float) -> None:
    """Print what the token cache needs; refuse (before extracting anything) above ``max_cache_gb``."""
    need = {split: tokens_bytes(encoder, n) for split, n in sizes.items()}
    total = sum(need.values())

    def shown(nbytes: int) -> str:
        return f"{nbytes / 1e9:.2f} GB" if nbytes >= 1e8 else f"{nbytes / 1e6:.1f} MB"

    print(f"attentive: cached patch tokens need {shown(total)} on disk and in memory ("
          + ", ".join(f"{s} {shown(b)}" for s, b in need.items())
          + f"; {encoder.num_patches} tokens x {encoder.embed_dim} x float16 per image)")
    if total > max_cache_gb * 1e9:
        raise ConfigError(f"cached patch tokens need {total / 1e9:.1f} GB, above --max-cache-gb {max_cache_gb:g}; "
                          "raise --max-cache-gb or train online (attentive.tokens=online)")


def run_attentive(
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
    max_cache_gb: float = MAX_TOKENS_GB,
) -> Path:
    """Attentive probes for one checkpoint with one recipe (same command under torchrun); returns the result path."""
    started = time.perf_counter()
    recipe = load_recipe(name_or_yaml, overrides)
    spec, ds, sel = recipe.attentive, recipe.dataset, recipe.selection
    if recipe.probe != "attentive":
        raise ConfigError(f"protocol {recipe.name} is a '{recipe.probe}' probe; run it with `ijepa-eval run`")
    cached = spec.tokens == "cached"
    rank, world_size, dev = process_device(device)  # under torchrun: cuda:LOCAL_RANK, process group joined
    is_main = rank == 0
    if cached and world_size > 1:
        raise ConfigError("attentive.tokens=cached trains on one process; run it without torchrun")
    encoder = encoder_of(ckpt, branch, arch, trust_checkpoint)
    model = model_record(encoder, label, model_meta)
    task = task_name(recipe, name_or_yaml)
    if cached:  # another protocol: <name>_cached (then @<dataset> when overridden)
        task = task.replace(recipe.name, f"{recipe.name}_cached", 1)
    out_dir = Path(out_dir)
    if skip_existing and (path := existing_result(out_dir, model, recipe, task)):
        if is_main:
            print(f"skip: {path} already holds {task} v{recipe.version} for this model and config")
        return path
    img = encoder.img_size
    train_tf, eval_tf = transforms_of(recipe, img)
    num_heads = spec.num_heads or encoder.num_heads

    fingerprints: dict[str, str] = {}  # of every split opened, for the result (compare pairs on them)

    def split_dataset(split: str, transform=None):
        dataset = get_dataset(ds.name, root, split, transform=transform, decode=recipe.decode, **ds.options)
        check_dataset(dataset)
        fingerprints[split] = dataset.fingerprint()
        return dataset

    train_raw = split_dataset(ds.train_split)
    num_classes, labels = train_raw.num_classes, np.asarray(train_raw.labels)
    fit_rows, selection_split, hold_rows = selection_plan(recipe, labels, choose=len(grid_members(spec)) > 1)
    sel_name = {"train_holdout": ds.train_split, "val": ds.val_split, "test": ds.test_split}.get(selection_split)
    if cached:  # every split's token size, checked before anything is extracted (test: its length only)
        needed = dict.fromkeys([ds.train_split, *([sel_name] if selection_split == "val" else []), ds.test_split])
        check_cache_size(encoder, {s: len(train_raw) if s == ds.train_split else len(split_dataset(s))
                                   for s in needed}, max_cache_gb)
    workers = default_workers(world_size) if num_workers is None else num_workers  # printed: after any refusal
    train_started = time.perf_counter()

    # online runs lend the encoder to the device (features.lent_encoder) until the test split is scored
    with contextlib.ExitStack() as lent:
        if cached:
            def tokens_of(split: str):
                fs = get_features(encoder, split_dataset(split), cache_dir=cache_dir, device=dev,
                                  batch_size=recipe.extraction_batch_size, num_workers=workers, progress=progress,
                                  decode=recipe.decode, tokens=True, transform=eval_tf)  # the key holds both
                return fs.tokens(), torch.from_numpy(fs.labels), fs.indices

            train_tokens, train_labels, _ = tokens_of(ds.train_split)
            fit_threads(0)  # the probes train in this process alone: every free core
            rows = torch.from_numpy(fit_rows)
            grid, last_train = fit_on_tokens(train_tokens[rows], train_labels[rows], spec, num_classes,
                                             num_heads=num_heads, epochs=recipe.epochs, batch_size=recipe.batch_size,
                                             seed=recipe.seed, device=dev, progress=progress and is_main)
            history = [{"epoch": recipe.epochs, "train": last_train}]

            def topk_on(split: str, rows: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
                tokens, y, indices = (train_tokens, train_labels, None) if split == ds.train_split else tokens_of(split)
                index = torch.arange(len(y)) if rows is None else torch.from_numpy(rows)
                topk, y = predict_tokens(grid, tokens[index], y[index], batch_size=EVAL_BATCH)
                return topk, y, (np.arange(len(y)) if indices is None else indices[index.numpy()])
            train_s = time.perf_counter() - train_started
        else:
            lent.enter_context(lent_encoder(encoder, dev))
            work = Path(work_dir) if work_dir else work_dir_for(cache_dir, task, model, "attentive")
            resume = prepare_work_dir(work, LATEST, resume=resume, restart=restart, is_main=is_main, job="attentive",
                                      command=f"ijepa-eval attentive --recipe {recipe.name}")
            if world_size > 1:
                torch.distributed.barrier()  # rank 0 has created (or cleared) the folder
            grid = AttentiveGrid(spec, encoder.embed_dim, num_heads, num_classes, batch_size=recipe.batch_size,
                                 steps_per_epoch=steps_per_epoch(len(fit_rows), recipe.batch_size), epochs=recipe.epochs,
                                 seed=recipe.seed, device=dev, ddp=world_size > 1)
            identity = {"config": recipe.to_dict(), "encoder_sha256": model["sha256"], "world_size": world_size}
            erasing = vjepa_erasing(dev) if spec.transforms == "vjepa" else None  # the rest of V-JEPA's train_tf
            state = fit_online(grid, encoder, SeededItems(train_raw, train_tf, recipe.seed), fit_rows,
                               epochs=recipe.epochs, batch_size=recipe.batch_size, seed=recipe.seed, device=dev,
                               world_size=world_size, rank=rank, work_dir=work, identity=identity, resume=resume,
                               num_workers=workers, progress=progress, erasing=erasing)
            history, train_s = state.history, state.elapsed_s
            last_train = history[-1]["train"]
            model_fn = EncodedGrid(encoder, grid)

            def topk_on(split: str, rows: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
                data = split_dataset(split, eval_tf)
                rows = np.arange(len(data)) if rows is None else rows
                topk, y = predict(model_fn, data, rows, EVAL_BATCH, dev, world_size, rank, workers,
                                  progress and is_main, desc=f"eval {split}")
                return topk.transpose(0, 1), y, rows

        chosen, selection_scores = 0, None
        if selection_split is not None:
            topk, y, _ = topk_on(sel_name, hold_rows)
            selection_scores = scores_from_topk(topk, y, num_classes)
            chosen = select_head(selection_scores, sel.metric)
        test_started = time.perf_counter()
        topk, test_labels, test_rows = topk_on(ds.test_split)  # only now: training and selection are over
        test_scores = scores_from_topk(topk[chosen : chosen + 1], test_labels, num_classes)[0]
        test_s = time.perf_counter() - test_started

    heads = []
    for i, member in enumerate(grid.members):
        scores: dict[str, Any] = {"train": last_train[i]}
        if selection_scores is not None:
            scores[selection_split] = selection_scores[i]
        if i == chosen:
            scores["test"] = test_scores
        heads.append({**member.as_dict(), "representation": "lastTOKENS", "head": "attentive",
                      "effective_lr": member.lr * grid.lr_scale, "scores": scores})
    wall_s = train_s + test_s
    result = ResultRecord(
        protocol={"name": recipe.name, "task": task, "version": recipe.version, "config": recipe.to_dict(),
                  "reference": recipe.reference, "deviations": [*recipe.deviations, *([CACHED_DEVIATION] if cached
                                                                                       else [])]},
        model=model,
        features={"representations": ["lastTOKENS"], "n_last_blocks": 1, "pool": "tokens", "img_size": img,
                  "mode": "cached tokens" if cached else "online", "num_tokens": encoder.num_patches,
                  "decode": recipe.decode,
                  "transform": {"train": None if cached else describe_transform(train_tf),
                                "eval": describe_transform(eval_tf)}},
        dataset={"name": ds.name, "train_split": ds.train_split, "val_split": ds.val_split,
                 "test_split": ds.test_split, "num_classes": int(num_classes),
                 "fingerprint": fingerprints,
                 "sizes": {ds.train_split: len(train_raw), "fit": len(fit_rows), ds.test_split: len(test_labels),
                           **({"holdout": len(hold_rows)} if hold_rows is not None else {})},
                 **({"split_info": train_raw.split_info} if getattr(train_raw, "split_info", None) else {})},
        metrics=dict(test_scores),
        selection={"split": selection_split or "none", "head": grid.members[chosen].name,
                   "metric": sel.metric if selection_split else None, "retrained_on_full_train": False},
        heads=heads,
        env=environment(),
        timings={"train_s": round(train_s, 3), "test_s": round(test_s, 3), "wall_s": round(wall_s, 3),
                 "total_s": round(time.perf_counter() - started, 3), **compute_cost(wall_s, dev, world_size),
                 "epochs": [{"epoch": h["epoch"], "seconds": h.get("seconds")} for h in history]},
        seed=recipe.seed,
        adaptation="frozen",
        probe="attentive",
        optimizer={**grid.lr_record(), "batch_size": recipe.batch_size, "weight_decay": [m.wd for m in grid.members],
                   "final_wd": spec.final_wd, "final_lr": spec.final_lr, "warmup_epochs": spec.warmup_epochs,
                   "clip_grad": spec.clip_grad, "precision": spec.precision},
    )
    path = out_dir / result_filename(result)
    if is_main:  # the chosen probe goes beside the JSON (probe_file) in V-JEPA's eval checkpoint layout
        probe = vjepa_checkpoint([grid.probes[chosen]], epoch=recipe.epochs, batch_size=recipe.batch_size,
                                 world_size=world_size)
        path = write_with_predictions(result, out_dir, test_labels.numpy(), topk[chosen].numpy(), test_rows,
                                      probe=probe)
    if world_size > 1:
        torch.distributed.barrier()
    return path
