"""The online attentive-probe job: the frozen encoder runs on every training batch of freshly augmented images
(V-JEPA's eval loop), a grid of probes learns from its patch tokens, an atomic checkpoint closes every epoch.

Batches and augmentations are the fine-tuning loop's (``finetune.train``): each epoch's order is a seeded
permutation, each image's augmentation is seeded by (seed, epoch, index), so ``--resume`` from the end of
epoch k reproduces the uninterrupted run (bit for bit on CPU), and N torchrun ranks of batch B/N together
see the single-process batch B (each probe is wrapped in DDP, which averages its gradients over ranks).
Images reach the encoder through ``features.encoding``, the path extraction uses: loaders ship uint8, the
device normalises (and randomly erases, each image under its own seed) one batch ahead on CUDA.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ijepa_eval.errors import ConfigError
from ijepa_eval.features import device_batches, encode
from ijepa_eval.finetune.train import EpochBatches, item_seed, read_checkpoint, seed_all
from ijepa_eval.io import atomic_torch_save
from ijepa_eval.probes.attentive_grid import AttentiveGrid
from ijepa_eval.threads import fit_threads

LATEST = "latest.pth"
POSTFIX_EVERY = 20  # steps between progress-bar updates: reading the running loss is a host sync


@dataclass
class OnlineState:
    """What a checkpoint holds besides the grid: progress and per-epoch history."""

    epoch: int = 0  # epochs done
    history: list[dict[str, Any]] = field(default_factory=list)
    elapsed_s: float = 0.0  # training wall-clock over every session


class EncodedGrid(nn.Module):
    """Images -> [B, H, C] logits of every probe, for ``finetune.train.predict``."""

    def __init__(self, encoder: nn.Module, grid: AttentiveGrid):
        super().__init__()
        self.encoder, self.grid = encoder, grid

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.grid.logits(encode(self.encoder, images, tokens=True)).transpose(0, 1)


def save_checkpoint(work_dir: Path, grid: AttentiveGrid, state: OnlineState, identity: dict[str, Any]) -> None:
    """Atomic: a kill mid-write leaves the previous epoch's checkpoint."""
    blob = {"grid": grid.state_dict(), "epoch": state.epoch, "history": state.history, "elapsed_s": state.elapsed_s,
            **identity}
    atomic_torch_save(blob, work_dir / LATEST)


def load_checkpoint(work_dir: Path, grid: AttentiveGrid, identity: dict[str, Any]) -> OnlineState:
    """Restore every probe, AdamW and GradScaler in place; refuse a checkpoint of another model or recipe."""
    blob = read_checkpoint(work_dir / LATEST, identity, "attentive probe")
    grid.load_state_dict(blob["grid"])
    return OnlineState(blob["epoch"], blob["history"], blob["elapsed_s"])


def steps_per_epoch(n_rows: int, batch_size: int) -> int:
    """Full global batches per epoch (``EpochBatches`` drops the last partial one)."""
    if n_rows < batch_size:
        raise ConfigError(f"{n_rows} training images < one batch of {batch_size}; lower batch_size")
    return n_rows // batch_size


def fit_online(grid: AttentiveGrid, encoder: nn.Module, items: Dataset, rows: np.ndarray, *, epochs: int,
               batch_size: int, seed: int, device: torch.device, world_size: int, rank: int, work_dir: Path,
               identity: dict[str, Any], resume: bool, num_workers: int, progress: bool,
               erasing: Callable[[torch.Tensor], torch.Tensor] | None = None) -> OnlineState:
    """Train every probe of ``grid`` on ``items[rows]`` (``items``: ``finetune.train.SeededItems`` with a uint8
    training transform; ``erasing`` finishes it on the device), the encoder — already on ``device``
    (``features.lent_encoder``) — re-run on each batch; a checkpoint in ``work_dir`` after every epoch."""
    is_main = rank == 0
    fit_threads(num_workers)  # intra-op threads + loader workers within the free cores
    state = load_checkpoint(work_dir, grid, identity) if resume else OnlineState()
    if state.epoch >= epochs and is_main:
        print(f"attentive: {work_dir / LATEST} already holds all {epochs} epochs")
    for epoch in range(state.epoch, epochs):
        started = time.perf_counter()
        seed_all(item_seed(seed, epoch, rank))  # a pure function of (seed, epoch, rank), whatever ran before
        sampler = EpochBatches(rows, batch_size, world_size, rank, seed, epoch)
        loader = DataLoader(items, batch_sampler=sampler, num_workers=num_workers, pin_memory=device.type == "cuda")
        bar = tqdm(device_batches(loader, device, seeds_at=2, erasing=erasing), total=len(loader),
                   desc=f"attentive epoch {epoch + 1}/{epochs}", unit="step", leave=False,
                   disable=not (is_main and progress))
        for step, (images, labels, _) in enumerate(bar):
            grid.train_step(encode(encoder, images, tokens=True, inference=False), labels)
            if step % POSTFIX_EVERY == 0 and is_main and progress:
                lr = grid.schedule(grid.members[0], grid.step_count - 1)[0]
                bar.set_postfix(loss=f"{grid.running_loss():.4f}", lr=f"{lr:.2e}")
        stats = grid.end_epoch()  # averaged over ranks
        if not all(np.isfinite(s["loss"]) for s in stats):
            bad = [m.name for m, s in zip(grid.members, stats, strict=True) if not np.isfinite(s["loss"])]
            raise ConfigError(f"training loss is not finite in epoch {epoch + 1} for {', '.join(bad)}; lower "
                              "attentive.lrs and rerun")
        seconds = time.perf_counter() - started
        lrs = [grid.schedule(m, grid.step_count - 1)[0] for m in grid.members]
        state.history.append({"epoch": epoch + 1, "train": stats, "lr": lrs, "seconds": round(seconds, 3)})
        state.epoch, state.elapsed_s = epoch + 1, state.elapsed_s + seconds
        if is_main:
            save_checkpoint(work_dir, grid, state, identity)
        if is_main and progress:
            best = min(stats, key=lambda s: s["loss"])
            print(f"attentive epoch {epoch + 1}/{epochs}: loss {best['loss']:.4f} train top1 {best['top1']:.2f} "
                  f"(best of {len(stats)} probes) lr {lrs[0]:.2e} ({seconds:.0f} s)", flush=True)
        if world_size > 1:
            dist.barrier()  # nobody races ahead of (or reads) a half-written checkpoint
    return state
