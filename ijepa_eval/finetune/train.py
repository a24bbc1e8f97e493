"""The fine-tuning loop: deterministic batches, torchrun/DDP, an atomic checkpoint every epoch, exact resume.

Every epoch is a pure function of (seed, epoch, rank) and the weights it starts from: the sample order is
a seeded permutation per epoch, each image's augmentation is seeded by (seed, epoch, index) whatever
process or loader worker draws it, and the global RNGs that drop path and mixup use are reseeded at each
epoch start. So ``--resume`` from the end of epoch k reproduces the uninterrupted run (bit for bit on CPU),
and N ranks of batch B/N together see exactly the single-process batch B.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from ijepa_eval.data.device import DevicePreprocess, prefetch
from ijepa_eval.errors import CheckpointError, ConfigError, DatasetError
from ijepa_eval.finetune.config import BatchPlan, FinetuneSpec
from ijepa_eval.finetune.model import lr_at, mixup_and_loss, set_lr
from ijepa_eval.io import atomic_torch_save
from ijepa_eval.probes.metrics import scores_from_topk, topk_predictions

LATEST = "latest.pth"


def item_seed(*parts: int) -> int:
    """A 63-bit seed from ints (Python's tuple hash of ints does not depend on PYTHONHASHSEED)."""
    return hash(tuple(parts)) & 0x7FFF_FFFF_FFFF_FFFF


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class EpochBatches(Sampler):
    """This rank's share of every global batch of one epoch, as ``(epoch, dataset index)`` items.

    The epoch's order is a permutation of ``rows`` seeded by (seed, epoch); global batch b is its b-th slice
    of ``batch_size`` and rank r takes the r-th contiguous chunk of it. The last partial batch is dropped
    (MAE: ``drop_last=True``).
    """

    def __init__(self, rows: np.ndarray, batch_size: int, world_size: int, rank: int, seed: int, epoch: int):
        if batch_size % world_size:
            raise ConfigError(f"batch_size {batch_size} is not divisible by {world_size} processes")
        if len(rows) < batch_size:
            raise DatasetError(f"{len(rows)} training images < one batch of {batch_size}; lower batch_size")
        self.rows, self.batch_size, self.seed, self.epoch = rows, batch_size, seed, epoch
        self.per_rank, self.rank = batch_size // world_size, rank

    def __len__(self) -> int:
        return len(self.rows) // self.batch_size

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        order = torch.randperm(len(self.rows), generator=torch.Generator().manual_seed(item_seed(self.seed, self.epoch)))
        for b in range(len(self)):
            chunk = order[b * self.batch_size + self.rank * self.per_rank:][: self.per_rank]
            yield [(self.epoch, int(self.rows[i])) for i in chunk]


class SeededItems(Dataset):
    """``(transform(dataset[index] image), label, item seed)`` under RNGs seeded by (seed, epoch, index).

    timm's RandAugment draws from ``random`` and ``numpy``, crops and erasing from ``torch``: all three are
    seeded for the item and restored afterwards, so the caller's streams are untouched. The item seed goes
    along so that the device-side random erasing of a uint8 transform is seeded per image too.
    """

    def __init__(self, dataset: Dataset, transform: Callable, seed: int):
        self.dataset, self.transform, self.seed = dataset, transform, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]):
        epoch, index = item
        image, label = self.dataset[index]
        py_state, np_state = random.getstate(), np.random.get_state()
        seed = item_seed(self.seed, epoch, index)
        try:
            with torch.random.fork_rng(devices=[]):
                seed_all(seed)
                return self.transform(image), label, seed
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


@torch.no_grad()
def predict(model: nn.Module, dataset: Dataset, rows: np.ndarray, batch_size: int, device: torch.device,
            world_size: int, rank: int, num_workers: int, progress: bool, desc: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(top-5 predictions [n, k], labels [n]) for ``dataset[rows]`` in row order; ranks share the rows.
    A model returning [B, H, C] (a grid of heads) gives [n, H, k]."""
    from tqdm.auto import tqdm

    was_training = model.training
    model.eval()
    mine = rows[rank::world_size]
    loader = DataLoader(Subset(dataset, mine.tolist()), batch_size=batch_size, num_workers=num_workers,
                        pin_memory=device.type == "cuda")
    prep = DevicePreprocess(device)
    topk, labels = [], []
    batches = prefetch(loader, lambda batch: (prep(batch[0]), batch[1]), device)
    for images, y in tqdm(batches, total=len(loader), desc=desc, unit="batch", leave=False, disable=not progress):
        with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(images)
        topk.append(topk_predictions(logits.float()))  # stays on the device: one copy at the end, not a sync per batch
        labels.append(torch.as_tensor(y))
    model.train(was_training)
    part = (torch.cat(topk).cpu(), torch.cat(labels)) if topk else (torch.zeros(0, 5, dtype=torch.long), torch.zeros(0, dtype=torch.long))
    if world_size == 1:
        return part
    parts: list[Any] = [None] * world_size
    dist.all_gather_object(parts, part)
    out_topk = torch.zeros(len(rows), *parts[0][0].shape[1:], dtype=torch.long)
    out_labels = torch.zeros(len(rows), dtype=torch.long)
    for r, (t, y) in enumerate(parts):
        out_topk[r::world_size], out_labels[r::world_size] = t, y
    return out_topk, out_labels


def scores(topk: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict[str, float]:
    return scores_from_topk(topk[None], labels, num_classes)[0]


@dataclass
class FitState:
    """What a checkpoint holds besides weights: progress, per-epoch history, the best epoch so far."""

    epoch: int = 0  # epochs done
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None  # {"epoch", "scores"} of the best selection-split evaluation
    elapsed_s: float = 0.0  # training wall-clock over every session


def best_path(work_dir: Path, epoch: int) -> Path:
    return work_dir / f"best-e{epoch:04d}.pth"


def save_checkpoint(work_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer, state: FitState,
                    identity: dict[str, Any]) -> None:
    """Atomic: a kill mid-write leaves the previous epoch's checkpoint."""
    blob = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": state.epoch,
            "history": state.history, "best": state.best, "elapsed_s": state.elapsed_s, **identity}
    atomic_torch_save(blob, work_dir / LATEST)
    keep = best_path(work_dir, state.best["epoch"]) if state.best else None
    for stale in work_dir.glob("best-e*.pth"):  # only now: the checkpoint naming the new best is on disk
        if stale != keep:
            stale.unlink()


def read_checkpoint(path: Path, identity: dict[str, Any], job: str) -> dict[str, Any]:
    """A training checkpoint, read safely; refused when written for another model or recipe (``identity``;
    the number of processes may differ: batches do not depend on it)."""
    from ijepa_eval.encoders.read import read_file  # the safe reader: one-line errors for bad files

    if not path.is_file():
        raise CheckpointError(f"no {job} checkpoint at {path}; run without --resume to start")
    blob, _ = read_file(path)
    for key, want in identity.items():
        if key != "world_size" and blob.get(key) != want:
            raise CheckpointError(f"{path} was written for another {key.replace('_', ' ')}; pass --restart to "
                                  "start over, or resume with the same checkpoint and overrides")
    return blob


def load_checkpoint(work_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                    identity: dict[str, Any]) -> FitState:
    """Restore weights and optimizer in place; refuse a checkpoint of another model or recipe."""
    blob = read_checkpoint(work_dir / LATEST, identity, "fine-tuning")
    model.load_state_dict(blob["model"])
    optimizer.load_state_dict(blob["optimizer"])
    state = FitState(blob["epoch"], blob["history"], blob["best"], blob["elapsed_s"])
    if state.best and not best_path(work_dir, state.best["epoch"]).is_file():
        raise CheckpointError(f"{best_path(work_dir, state.best['epoch'])} is missing; pass --restart")
    return state


def fit(
    model: nn.Module, dataset: Dataset, rows: np.ndarray, num_classes: int, *, spec: FinetuneSpec, epochs: int,
    plan: BatchPlan, seed: int, device: torch.device, rank: int, work_dir: Path,
    identity: dict[str, Any], resume: bool, num_workers: int, progress: bool,
    evaluate: Callable[[nn.Module], dict[str, float]] | None = None, select_metric: str = "top1",
) -> FitState:
    """Train ``model`` on ``dataset[rows]`` (``dataset`` applies the training transform through
    ``SeededItems``) with global batches split as ``plan`` says; ``evaluate`` scores the selection split
    every ``eval_every`` epochs and at the end. A uint8 transform (``train_transform(spec, s, normalize=False)``)
    is normalised and randomly erased on the device, one batch ahead on CUDA (``ijepa_eval.data.device``)."""
    from tqdm.auto import tqdm

    from ijepa_eval.finetune.model import build_optimizer, device_erasing

    is_main = rank == 0
    world_size, micro, accum = plan.world_size, plan.micro_batch, plan.accum_steps
    model.to(device)
    optimizer = build_optimizer(model, spec)
    state = load_checkpoint(work_dir, model, optimizer, identity) if resume else FitState()
    if state.epoch >= epochs and is_main:
        print(f"finetune: {work_dir / LATEST} already holds all {epochs} epochs")
    net = nn.parallel.DistributedDataParallel(model) if world_size > 1 else model
    mixup, criterion = mixup_and_loss(spec, num_classes)
    lr = spec.effective_lr(plan.global_batch)
    autocast = torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda")
    prep = DevicePreprocess(device, erasing=device_erasing(spec, device))

    def to_device(batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels, seeds = batch
        return prep(images, seeds.tolist()), labels.to(device, non_blocking=True)

    bar = tqdm(total=epochs, initial=state.epoch, desc="finetune", unit="ep", disable=not (is_main and progress))
    for epoch in range(state.epoch, epochs):
        started = time.perf_counter()
        seed_all(item_seed(seed, epoch, rank))  # drop path, mixup: a pure function of (seed, epoch, rank)
        sampler = EpochBatches(rows, plan.global_batch, world_size, rank, seed, epoch)
        loader = DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers, pin_memory=device.type == "cuda")
        model.train()
        losses = []
        for step, (images, labels) in enumerate(prefetch(loader, to_device, device)):
            current_lr = lr_at(epoch + step / len(sampler), spec, lr, epochs)
            set_lr(optimizer, current_lr)
            if mixup is not None:
                images, labels = mixup(images, labels)
            step_loss = torch.zeros((), device=device)
            for k in range(accum):
                part = slice(k * micro, (k + 1) * micro)
                last = k == accum - 1
                with contextlib.nullcontext() if last or world_size == 1 else net.no_sync():
                    with autocast:
                        loss = criterion(net(images[part]), labels[part])
                    (loss / accum).backward()
                step_loss += loss.detach() / accum
            if spec.clip_grad is not None:
                nn.utils.clip_grad_norm_(model.parameters(), spec.clip_grad)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(step_loss)
        loss = torch.stack(losses).mean()
        if world_size > 1:
            dist.all_reduce(loss, op=dist.ReduceOp.AVG)
        if not math.isfinite(loss.item()):
            raise ConfigError(f"training loss is {loss.item()} in epoch {epoch}; lower the lr (finetune.blr) and rerun")
        row = {"epoch": epoch, "train_loss": loss.item(), "lr": current_lr}  # the head's lr (scale 1) at the last step
        done = epoch + 1
        if evaluate is not None and (done % spec.eval_every == 0 or done == epochs):
            row["selection_scores"] = evaluate(model)
            if state.best is None or row["selection_scores"][select_metric] > state.best["scores"][select_metric]:
                state.best = {"epoch": done, "scores": row["selection_scores"]}
                if is_main:
                    atomic_torch_save(model.state_dict(), best_path(work_dir, done))
        state.epoch, state.history = done, [*state.history, {**row, "seconds": round(time.perf_counter() - started, 3)}]
        state.elapsed_s += time.perf_counter() - started
        if is_main:
            save_checkpoint(work_dir, model, optimizer, state, identity)
        if world_size > 1:
            dist.barrier()  # nobody races ahead of (or reads) a half-written checkpoint
        bar.set_postfix(loss=f"{row['train_loss']:.4f}", **({"sel": f"{row['selection_scores'][select_metric]:.1f}"}
                                                             if "selection_scores" in row else {}))
        bar.update(1)
    bar.close()
    return state
