"""I-JEPA pretraining loop, nanoGPT style: schedules and optimizer groups on top, one ``train`` loop below.

    from ijepa_eval.pretrain import apply_overrides, get_config, train
    train(apply_overrides(get_config("tiny_cpu"), ["steps=100"]), "runs/tiny")

Launched by ``ijepa-eval pretrain`` or ``torchrun -m ijepa_eval.pretrain.train`` (see pretrain.train). What
the loop sets up lives beside it: the seeded data pipeline (``batches``), DDP (``distributed``), the run
folder's log and config (``run_folder``), the official checkpoint (``checkpoint``) and the collapse / kNN
monitors (``monitor``). Every batch is a pure function of (seed, step), so ``resume`` replays the exact
same run and N ranks of batch B see exactly what one process of batch N x B sees.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from ijepa_eval.devices import process_device
from ijepa_eval.env import compute_cost
from ijepa_eval.errors import ConfigError
from ijepa_eval.pretrain import checkpoint as ckpt
from ijepa_eval.pretrain.batches import (
    SeededCrops,
    StepBatches,
    StepMasks,
    build_dataset,
    clevr_mini_root,
    pretrain_transform,
)
from ijepa_eval.pretrain.configs import DATASET_CLEVR_MINI, PretrainConfig, config_to_dict
from ijepa_eval.pretrain.distributed import wrap_models
from ijepa_eval.pretrain.masks import MaskCollator
from ijepa_eval.pretrain.model import build_ijepa, ema_update, jepa_loss, make_targets
from ijepa_eval.pretrain.monitor import collapse_stats, knn_monitor
from ijepa_eval.pretrain.run_folder import CKPT_NAME, LOG_NAME, append_log, start_log
from ijepa_eval.schedules import cosine_wd, warmup_cosine_lr
from ijepa_eval.threads import fit_threads


def ema_momentum(step: int, total: int, ema: tuple[float, float]) -> float:
    """Linear from ema[0] at step 0 to ema[1] at step ``total`` (the official generator)."""
    return ema[0] + step * (ema[1] - ema[0]) / total


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
    rank, world_size, device = process_device(None)  # torchrun: cuda:LOCAL_RANK, NCCL (gloo on CPU)
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
    if resume:
        start_step = ckpt.load_training_state(
            out_dir / CKPT_NAME, encoder, predictor, target_encoder, optimizer, collator
        )
        if start_step >= stop_step:  # a finished run (e.g. requeued by SLURM): nothing to do, not an error
            if is_main:
                print(f"pretrain: {out_dir / CKPT_NAME} is already at step {start_step} of {stop_step}; "
                      f"pass --steps N (N > {start_step}) to train longer")
            return {"steps": start_step, "last_loss": None, "checkpoint": str(out_dir / CKPT_NAME)}
    resolved = config_to_dict(cfg)
    if is_main:
        start_log(out_dir, resolved, resumed_at=start_step if resume else None, world_size=world_size, ipe=ipe,
                  total_steps=total_steps, device=str(device))
    context_model, predictor_model, no_sync = wrap_models(encoder, predictor, world_size, cfg.compile)

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

    log_path = out_dir / LOG_NAME
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
        if is_main and ((step + 1) % cfg.collapse_every == 0 or step == start_step):  # rank 0 logs it alone
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
                    append_log(log_path, r)
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
