"""I-JEPA pretraining loop, nanoGPT style: schedules and helpers on top, one ``train`` loop below.

Launch:
    ijepa-eval pretrain --config tiny_cpu --out runs/tiny                      # 2 CPU cores, minutes
    torchrun --standalone --nproc_per_node 8 -m ijepa_eval.pretrain.train \\
        --config vith14_in1k --out runs/vith14 root=/data/imagenet                # one node, 8 GPUs
    ijepa-eval pretrain --config vith14_in1k --out runs/vith14 --slurm-nodes 2   # SLURM via submitit

Every batch is a pure function of (seed, step): the sampler permutes by epoch, crops are seeded per
image, and the masks are drawn for the step the items carry (not a call counter: workers finish out of
order). So ``--resume`` replays the exact same run, and
N ranks of batch B see exactly what one process of batch N x B sees.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate
from torchvision import transforms as T

from ijepa_eval.env import compute_cost
from ijepa_eval.errors import ConfigError, DatasetError
from ijepa_eval.io import atomic_write_json, atomic_write_text
from ijepa_eval.pretrain import checkpoint as ckpt
from ijepa_eval.pretrain.configs import DATASET_CLEVR_MINI, PretrainConfig, config_to_dict
from ijepa_eval.pretrain.masks import MaskCollator
from ijepa_eval.pretrain.model import build_ijepa, ema_update, jepa_loss, make_targets
from ijepa_eval.threads import fit_threads

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
LOG_NAME, CKPT_NAME = "log.jsonl", "latest.pth.tar"


# -- schedules: closed forms of the official schedulers, indexed by the 0-based training step ------------
def warmup_cosine_lr(step: int, warmup_steps: int, total: int, start_lr: float, lr: float, final_lr: float):
    """Official WarmupCosineSchedule: it increments before use, so step s uses s + 1."""
    s = step + 1
    if s < warmup_steps:
        return start_lr + s / max(1, warmup_steps) * (lr - start_lr)
    progress = (s - warmup_steps) / max(1, total - warmup_steps)
    return max(final_lr, final_lr + (lr - final_lr) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def cosine_wd(step: int, total: int, wd: float, final_wd: float) -> float:
    """Official CosineWDSchedule (also incremented before use), clamped at ``final_wd``."""
    value = final_wd + (wd - final_wd) * 0.5 * (1.0 + math.cos(math.pi * (step + 1) / total))
    return max(final_wd, value) if final_wd <= wd else min(final_wd, value)


def ema_momentum(step: int, total: int, ema: tuple[float, float]) -> float:
    """Linear from ema[0] at step 0 to ema[1] at step ``total`` (the official generator)."""
    return ema[0] + step * (ema[1] - ema[0]) / total


# -- data ---------------------------------------------------------------------------------------------------
class StepBatches(Sampler):
    """Yields, for each step from ``start_step``, this rank's share of the global batch.

    The global batch of step s is a slice of the permutation of epoch ``s // ipe``; rank r takes the r-th
    contiguous chunk, so the ranks together hold exactly the single-process batch. Items are
    ``(epoch, index, step)`` so that ``SeededCrops`` can seed each image's random crop and ``StepMasks``
    can draw the step's masks.
    """

    def __init__(
        self, n: int, batch_size: int, world_size: int, rank: int, seed: int, start_step: int, steps: int
    ):
        self.n, self.batch_size, self.world_size, self.rank = n, batch_size, world_size, rank
        self.seed, self.start_step, self.steps = seed, start_step, steps
        self.ipe = n // (batch_size * world_size)
        if self.ipe == 0:
            raise DatasetError(
                f"{n} images < one global batch of {batch_size * world_size}; lower batch_size"
            )

    def __len__(self) -> int:
        return max(0, self.steps - self.start_step)

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        perm, perm_epoch = None, -1
        gb = self.batch_size * self.world_size
        for step in range(self.start_step, self.steps):
            epoch, i = divmod(step, self.ipe)
            if epoch != perm_epoch:
                perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + epoch))
                perm_epoch = epoch
            chunk = perm[i * gb + self.rank * self.batch_size :][: self.batch_size]
            yield [(epoch, int(j), step) for j in chunk]


class SeededCrops(Dataset):
    """Applies ``transform`` under an RNG seeded by (seed, epoch, index): crops do not depend on workers.

    Returns ``(image, label, step)``: the step travels with the item to ``StepMasks``.
    """

    def __init__(self, dataset: Dataset, transform, seed: int):
        self.dataset, self.transform, self.seed = dataset, transform, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int, int]):
        epoch, index, step = item
        image, label = self.dataset[index]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(hash((self.seed, epoch, index)) & 0x7FFF_FFFF_FFFF_FFFF)
            return self.transform(image), label, step


class StepMasks:
    """``collate_fn``: ``((images, labels), masks_enc, masks_pred)`` with the masks of the batch's own step.

    DataLoader workers finish batches out of order, so the official shared call counter would hand a batch
    the masks of another step (and a resumed run other masks than the uninterrupted one).
    """

    def __init__(self, collator: MaskCollator):
        self.collator = collator

    def __call__(self, batch):
        (step,) = {s for _, _, s in batch}
        masks_enc, masks_pred = self.collator.sample_masks(len(batch), counter=step)
        return default_collate([(image, label) for image, label, _ in batch]), masks_enc, masks_pred


def pretrain_transform(crop_size: int, crop_scale: tuple[float, float]):
    """The official augmentation: RandomResizedCrop only (no flip, no colour), ImageNet normalisation."""
    return T.Compose(
        [
            T.Lambda(lambda im: im.convert("RGB")),
            T.RandomResizedCrop(crop_size, scale=tuple(crop_scale)),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def clevr_mini_root(cfg: PretrainConfig, out_dir: Path) -> Path:
    """Render CLEVR-mini under ``out_dir`` once (train = pretraining images, val = kNN monitor)."""
    from ijepa_eval.data.clevr_mini import render_clevr_mini

    root = out_dir / "clevr_mini"
    if not (root / "scenes" / "CLEVR_val_scenes.json").exists():
        render_clevr_mini(root, cfg.clevr_mini_images, max(32, cfg.clevr_mini_images // 5),
                          size=cfg.clevr_mini_size, seed=cfg.seed)  # fmt: skip
    return root


def build_dataset(cfg: PretrainConfig, out_dir: Path) -> Dataset:
    from ijepa_eval.data import get_dataset

    if cfg.dataset == DATASET_CLEVR_MINI:
        root = cfg.root or clevr_mini_root(cfg, out_dir)
        return get_dataset("clevr_count", root, split="train")
    if not cfg.root and not cfg.dataset.startswith("hf:"):
        raise ConfigError(f"dataset '{cfg.dataset}' needs a data root: pass --root DIR (or root=DIR)")
    return get_dataset(cfg.dataset, cfg.root or None, split="train")


# -- monitoring ---------------------------------------------------------------------------------------------
@torch.no_grad()
def collapse_stats(tokens: torch.Tensor) -> dict[str, float]:
    """Collapse signals of the target encoder's tokens [B, N, D], layer-normed like the training targets.

    ``target_std``: std over the batch at each (position, channel), averaged; ~1 when targets vary
    across images, -> 0 when they collapse to an image-independent map. ``target_erank``: effective rank
    (exp entropy of the normalised singular values) of all centred tokens; -> 1 under dimensional collapse.
    """
    h = F.layer_norm(tokens.float(), (tokens.size(-1),))
    flat = h.flatten(0, 1)
    s = torch.linalg.svdvals(flat - flat.mean(0))
    p = s / s.sum().clamp_min(1e-12)
    erank = torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum())
    return {"target_std": float(h.std(0).mean()), "target_erank": float(erank)}


@torch.no_grad()
def knn_monitor(
    target: nn.Module, cfg: PretrainConfig, out_dir: Path, device: torch.device, max_images: int = 2000
) -> dict[str, float]:
    """kNN top-1 (k=20) of the target encoder's avg-pooled features: train split vs val split of a
    labelled dataset (default: clevr_count on the CLEVR-mini pretraining data), at most ``max_images``
    evenly spaced images per split so the monitor stays cheap on large datasets."""
    from torch.utils.data import Subset

    from ijepa_eval.data import eval_transform, get_dataset
    from ijepa_eval.probes import knn_scores

    if cfg.knn_dataset:
        name, root = cfg.knn_dataset, cfg.root
    else:  # CLEVR-mini: the given root when pretraining on it, else the generated copy
        name = "clevr_count"
        given = cfg.dataset == DATASET_CLEVR_MINI and cfg.root
        root = cfg.root if given else str(clevr_mini_root(cfg, out_dir))
    feats = []
    for split in ("train", "val"):
        ds = get_dataset(name, root or None, split=split, transform=eval_transform(name, cfg.crop_size))
        rows = np.linspace(0, len(ds) - 1, min(len(ds), max_images)).round().astype(int).tolist()
        loader = DataLoader(Subset(ds, rows), batch_size=64, num_workers=0)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            pooled = [target(x.to(device)).mean(1).float().cpu() for x, _ in loader]
        feats.append((torch.cat(pooled), ds.labels[rows], ds.num_classes))
    (xtr, ytr, n_cls), (xva, yva, _) = feats
    return {"knn_top1": knn_scores(xtr, ytr, xva, yva, [20], n_cls)[0]["top1"]}


def rewrite_log(path: Path, upto_step: int) -> None:
    """On resume, drop log rows newer than the checkpoint (they will be produced again)."""
    if path.exists():
        rows = [r for r in path.read_text().splitlines() if r and json.loads(r).get("step", -1) <= upto_step]
        atomic_write_text(path, "".join(r + "\n" for r in rows))


# -- distributed ---------------------------------------------------------------------------------------------
def setup_distributed() -> tuple[int, int, torch.device]:
    """(rank, world_size, device) from torchrun's env vars; gloo on CPU, nccl on CUDA."""
    if "RANK" not in os.environ:
        return 0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world_size)
    return rank, world_size, device


def param_groups(encoder: nn.Module, predictor: nn.Module) -> list[dict]:
    """Official init_opt groups: weight decay on matrices only; biases and 1-D params (norms) excluded.

    The frozen sin-cos position embeddings stay in the groups, as in the official code (AdamW skips them:
    they never get a gradient), so ``opt`` in our checkpoints indexes parameters exactly like theirs.
    """
    groups = []
    for exclude in (False, True):
        for module in (encoder, predictor):
            params = [p for n, p in module.named_parameters() if ("bias" in n or p.ndim == 1) == exclude]
            groups.append({"params": params, "WD_exclude": exclude, "weight_decay": 0.0})
    return groups


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# -- the loop -----------------------------------------------------------------------------------------------
def train(
    cfg: PretrainConfig, out_dir: str | os.PathLike, *, resume: bool = False, progress: bool = True
) -> dict:
    """Train, write ``out_dir/latest.pth.tar`` (official format) and ``out_dir/log.jsonl``; return a summary."""
    from tqdm import tqdm

    started = time.perf_counter()

    cfg = cfg.validate()
    # record the actual widths (not 0 = "from model_name") so the checkpoint's config says what was built
    cfg = replace(
        cfg, **{k: v for k, v in cfg.resolved_arch().items() if k in ("embed_dim", "depth", "num_heads")}
    )
    out_dir = Path(out_dir)
    rank, world_size, device = setup_distributed()
    is_main = rank == 0
    cuda = device.type == "cuda"
    fit_threads(cfg.num_workers)  # a busy neighbour must not turn 0.2 s steps into 3 s ones (ijepa_eval.threads)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    out_dir.mkdir(parents=True, exist_ok=True)
    _seed_everything(cfg.seed)

    # data first: its length fixes iterations per epoch and so every schedule
    if cfg.dataset == DATASET_CLEVR_MINI and not cfg.root:
        if is_main:
            clevr_mini_root(cfg, out_dir)
        if world_size > 1:
            dist.barrier()
    dataset = build_dataset(cfg, out_dir)
    ipe = len(dataset) // (cfg.batch_size * world_size)
    total_steps = cfg.steps if cfg.steps > 0 else cfg.epochs * ipe
    sched_steps = max(1, int(cfg.ipe_scale * total_steps))
    warmup_steps = (
        int(round(cfg.warmup / cfg.epochs * total_steps)) if cfg.steps > 0 else int(cfg.warmup * ipe)
    )
    stop_step = min(total_steps, cfg.stop_at) if cfg.stop_at > 0 else total_steps

    arch = cfg.resolved_arch()
    encoder, predictor, target_encoder = build_ijepa(
        **arch, pred_depth=cfg.pred_depth, pred_emb_dim=cfg.pred_emb_dim
    )
    for module in (encoder, predictor, target_encoder):
        module.to(device)
    optimizer = torch.optim.AdamW(param_groups(encoder, predictor), fused=cuda)
    collator = MaskCollator(
        input_size=cfg.crop_size, patch_size=cfg.patch_size, enc_mask_scale=cfg.enc_mask_scale,
        pred_mask_scale=cfg.pred_mask_scale, aspect_ratio=cfg.aspect_ratio, nenc=cfg.num_enc_masks,
        npred=cfg.num_pred_masks, min_keep=cfg.min_keep, allow_overlap=cfg.allow_overlap,
        strategy=cfg.mask_strategy, official_bias=cfg.official_bias, seed=cfg.seed, rank=rank,
    )  # fmt: skip

    start_step = 0
    log_path = out_dir / LOG_NAME
    if resume:
        start_step = ckpt.load_training_state(
            out_dir / CKPT_NAME, encoder, predictor, target_encoder, optimizer, collator
        )
        if start_step >= stop_step:  # a finished run (e.g. requeued by SLURM): nothing to do, not an error
            if is_main:
                print(f"pretrain: {out_dir / CKPT_NAME} is already at step {start_step} of {stop_step}; "
                      f"pass --steps N (N > {start_step}) to train longer")
            return {"steps": start_step, "last_loss": None, "checkpoint": str(out_dir / CKPT_NAME)}
        if is_main:
            rewrite_log(log_path, start_step - 1)
    elif is_main:
        atomic_write_text(log_path, "")
    resolved = config_to_dict(cfg)
    if is_main:
        atomic_write_json(out_dir / "config.json", resolved)
        _append(log_path, {"event": "start", "step": start_step, "world_size": world_size, "ipe": ipe,
                           "total_steps": total_steps, "device": str(device), "config": resolved})  # fmt: skip

    context_model, predictor_model = encoder, predictor
    no_sync = contextlib.nullcontext  # DDP: skip the gradient all-reduce on all but the last micro-batch
    if world_size > 1:
        # no static_graph: with no_sync it crashes (or stops all-reducing) in torch's reducer, and every
        # parameter is used each step anyway; bucket views save a gradient copy and its memory
        ddp = dict(gradient_as_bucket_view=True)
        context_model, predictor_model = DDP(encoder, **ddp), DDP(predictor, **ddp)
        ddp_models = (context_model, predictor_model)

        @contextlib.contextmanager
        def no_sync():
            with ddp_models[0].no_sync(), ddp_models[1].no_sync():
                yield

    if cfg.compile:
        # mask lengths change every batch: compile for dynamic shapes instead of recompiling per length
        context_model = torch.compile(context_model, dynamic=True)
        predictor_model = torch.compile(predictor_model, dynamic=True)

    sampler = StepBatches(len(dataset), cfg.batch_size, world_size, rank, cfg.seed, start_step, stop_step)
    loader = DataLoader(
        SeededCrops(dataset, pretrain_transform(cfg.crop_size, cfg.crop_scale), cfg.seed),
        batch_sampler=sampler, collate_fn=StepMasks(collator), num_workers=cfg.num_workers, pin_memory=cuda,
        persistent_workers=cfg.num_workers > 0,
    )  # fmt: skip
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda and cfg.bf16)
    micro = cfg.batch_size // cfg.grad_accum

    def context_loss(imgs, masks_enc, masks_pred):
        with autocast:
            targets = make_targets(target_encoder, imgs, masks_pred, len(masks_enc))
            preds = predictor_model(context_model(imgs, masks_enc), masks_enc, masks_pred)
            return jepa_loss(preds, targets, cfg.loss)

    pending: list[tuple[int, torch.Tensor, dict]] = []  # losses stay on device until the next log flush
    epoch_loss, epoch_count, last_loss = 0.0, 0, float("nan")
    bar = tqdm(total=stop_step, initial=start_step, disable=not (is_main and progress), desc="pretrain")
    t_last = time.perf_counter()
    for step, ((imgs, _), masks_enc, masks_pred) in zip(range(start_step, stop_step), loader, strict=False):
        lr = warmup_cosine_lr(step, warmup_steps, sched_steps, cfg.start_lr, cfg.lr, cfg.final_lr)
        wd = cosine_wd(step, sched_steps, cfg.weight_decay, cfg.final_weight_decay)
        for group in optimizer.param_groups:
            group["lr"] = lr
            if not group.get("WD_exclude", False):
                group["weight_decay"] = wd
        imgs = imgs.to(device, non_blocking=True)
        masks_enc = [m.to(device, non_blocking=True) for m in masks_enc]
        masks_pred = [m.to(device, non_blocking=True) for m in masks_pred]
        step_loss = torch.zeros((), device=device)
        for k in range(cfg.grad_accum):
            sl = slice(k * micro, (k + 1) * micro)
            with contextlib.nullcontext() if k == cfg.grad_accum - 1 else no_sync():
                loss = context_loss(imgs[sl], [m[sl] for m in masks_enc], [m[sl] for m in masks_pred])
                (loss / cfg.grad_accum).backward()
            step_loss += loss.detach() / cfg.grad_accum
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        momentum = ema_momentum(step, sched_steps, cfg.ema)
        ema_update(target_encoder, encoder, momentum)

        row = {"step": step, "epoch": step // ipe, "lr": lr, "wd": wd, "momentum": momentum,
               "mask_enc": masks_enc[0].shape[1], "mask_pred": masks_pred[0].shape[1]}  # fmt: skip
        if (step + 1) % cfg.collapse_every == 0 or step == start_step:
            with torch.no_grad(), autocast:
                tokens = target_encoder(imgs)
            row.update(collapse_stats(tokens))
            if row["target_std"] < cfg.collapse_std_floor or row["target_erank"] < cfg.collapse_rank_floor:
                bar.write(f"warning: possible collapse at step {step}: target std {row['target_std']:.4f}, "
                          f"effective rank {row['target_erank']:.2f}")  # fmt: skip
        if cfg.knn_every and (step + 1) % cfg.knn_every == 0 and is_main:
            row.update(knn_monitor(target_encoder, cfg, out_dir, device))
        pending.append((step, step_loss, row))
        bar.update(1)

        done = step + 1 == stop_step
        if (step + 1) % cfg.log_every == 0 or (step + 1) % cfg.save_every == 0 or done:
            losses = torch.stack([loss for _, loss, _ in pending])
            if world_size > 1:
                dist.all_reduce(losses, op=dist.ReduceOp.AVG)
            now = time.perf_counter()
            step_time = (now - t_last) / len(pending)
            for (_, _, r), value in zip(pending, losses.tolist(), strict=True):
                epoch_loss, epoch_count = (0.0, 0) if r["step"] % ipe == 0 else (epoch_loss, epoch_count)
                epoch_loss, epoch_count, last_loss = epoch_loss + value, epoch_count + 1, value
                r.update(loss=value, step_time=step_time,
                         images_per_s=cfg.batch_size * world_size / step_time)  # fmt: skip
                if is_main:
                    _append(log_path, r)
            if not math.isfinite(last_loss):
                raise ConfigError(
                    f"loss is {last_loss} at step {step}; lower lr (or check the data) and rerun"
                )
            bar.set_postfix(loss=f"{last_loss:.4f}", lr=f"{lr:.2e}")
            pending, t_last = [], now
        if is_main and ((step + 1) % cfg.save_every == 0 or done):
            ckpt.save_checkpoint(
                out_dir / CKPT_NAME, encoder=encoder, predictor=predictor, target_encoder=target_encoder,
                optimizer=optimizer, epoch=(step + 1) // ipe, loss=epoch_loss / max(1, epoch_count),
                batch_size=cfg.batch_size, world_size=world_size, lr=cfg.lr, config=resolved, step=step + 1,
                bf16=cfg.bf16,
            )  # fmt: skip
    bar.close()
    if world_size > 1:
        dist.barrier()
    # this session's cost (a resumed run adds its earlier sessions' own); GPU-hours count every rank's GPU
    wall_s = time.perf_counter() - started
    return {"steps": stop_step, "last_loss": last_loss, "checkpoint": str(out_dir / CKPT_NAME),
            "timings": {"wall_s": round(wall_s, 3), **compute_cost(wall_s, device, world_size)}}


def _append(path: Path, row: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``torchrun -m ijepa_eval.pretrain.train`` (same options as ``ijepa-eval pretrain``)."""
    from ijepa_eval.cli import main as cli_main

    code = cli_main(["pretrain", *(sys.argv[1:] if argv is None else argv)])
    if dist.is_initialized():
        dist.destroy_process_group()
    return code


if __name__ == "__main__":
    raise SystemExit(main())
