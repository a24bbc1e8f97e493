"""A grid of linear heads trained jointly in one pass over frozen features (the paper's 16-head sweep).

The paper reports, per protocol, the best of {lastPOOL, concatPOOL4} × {BatchNorm+linear, linear} ×
lr multiplier {1, 0.1} × weight decay {5e-4, 0}. Training 16 probes one after the other costs 16 passes;
here all heads that read the same input share one matmul (weights stored [F, H, C] so a group is a single
``x @ W.view(F, H*C)``) and one vectorised optimizer step with per-head lr and wd tensors, so the grid
costs about one head.

Heads are VISSL's (``vissl/models/heads``): ``linear`` = ``mlp`` (nn.Linear); ``bn_linear`` = ``eval_mlp``:
BatchNorm (eps 1e-5, momentum 0.1, learnable affine) then nn.Linear. The BN heads of one representation
share the normalisation (same input, same batch statistics) and each keeps its own affine γ, β, folded
into its weights: (x̂·γ + β) W + b = x̂ (γ ⊙ W) + (β W + b). Linear layers start as torch's nn.Linear
(weight and bias ~ U(±1/√F)), each head from the same seed whatever the grid, which makes a head trained in
a grid identical to the same head trained alone (tested).

Parameter treatment follows VISSL's linear-eval param groups: BN γ, β get no weight decay
(``regularize_bn: False``); Linear biases get it when ``regularize_bias`` (VISSL's default True). LARS
(VISSL ``_LARS`` with ``exclude_bias_and_norm``) scales only the weight matrices by the trust ratio; with
``regularize_bias: False`` it is MAE's LARS (``util/lars.py``), where every 1-D parameter is excluded from
both weight decay and adaptation. The lr follows the batch size: lr = base_lr × batch_size / base_batch
(VISSL ``auto_lr_scaling``, MAE's ``blr``); a cosine schedule's end value scales the same way.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import product
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ijepa_eval.devices import fits, normalize
from ijepa_eval.errors import ConfigError, unknown_choice
from ijepa_eval.probes.metrics import scores_from_topk, topk_predictions

HeadKind = Literal["bn_linear", "linear"]
OptimizerName = Literal["sgd", "lars"]
ScheduleName = Literal["step", "cosine"]
UpdateInterval = Literal["step", "epoch"]
BN_EPS, BN_MOMENTUM = 1e-5, 0.1  # VISSL MODEL.HEAD.BATCHNORM_EPS / BATCHNORM_MOMENTUM


def check_choice(kind: str, value: str, literal) -> str:
    """Runtime check of a ``Literal`` option with the project's lookup error."""
    if value not in get_args(literal):
        raise ConfigError(unknown_choice(kind, value, get_args(literal)))
    return value


@dataclass(frozen=True)
class HeadSpec:
    representation: str
    head: HeadKind
    lr_mult: float
    wd: float

    @property
    def name(self) -> str:
        return f"{self.representation}/{self.head}/lr{self.lr_mult:g}x/wd{self.wd:g}"

    def as_dict(self) -> dict:
        return {"name": self.name, "representation": self.representation, "head": self.head,
                "lr_mult": self.lr_mult, "wd": self.wd}


def head_grid(representations: Sequence[str], heads: Sequence[str], lr_mults: Sequence[float],
              wds: Sequence[float]) -> list[HeadSpec]:
    """Cross product of the four axes, in a stable order (representation outermost)."""
    for h in heads:
        check_choice("head", h, HeadKind)
    return [HeadSpec(r, h, float(m), float(w)) for r, h, m, w in product(representations, heads, lr_mults, wds)]


@dataclass
class OptimizerConfig:
    name: OptimizerName = "sgd"
    base_lr: float = 0.01  # lr per base_batch images; each head uses base_lr * batch / base_batch * lr_mult
    base_batch: int = 256  # VISSL auto_lr_scaling.base_lr_batch_size, MAE's 256
    momentum: float = 0.9
    nesterov: bool = False
    trust_coefficient: float = 0.001  # LARS eta (VISSL / MAE LARS)
    regularize_bias: bool = True  # weight decay on Linear biases: VISSL True; False = MAE's LARS exclusions


@dataclass
class ScheduleConfig:
    name: ScheduleName = "step"
    milestones: list[int] = field(default_factory=list)  # epochs (step schedule)
    gamma: float = 0.1
    final_lr: float = 0.0  # cosine end value at base_batch (scaled like base_lr), before lr_mult
    warmup_epochs: float = 0.0  # linear warm-up from 0
    update_interval: UpdateInterval = "step"  # cosine: lr set every step, or once per epoch (VISSL "epoch")


@dataclass
class LinearTrainConfig:
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    epochs: int = 10
    batch_size: int = 256

    def __post_init__(self) -> None:
        check_choice("optimizer", self.optimizer.name, OptimizerName)
        check_choice("schedule", self.schedule.name, ScheduleName)
        check_choice("update_interval", self.schedule.update_interval, UpdateInterval)
        if self.epochs < 1 or self.batch_size < 2:
            raise ConfigError(f"epochs must be >= 1 and batch_size >= 2 (got {self.epochs}, {self.batch_size})")
        if self.optimizer.base_batch < 1 or self.optimizer.base_lr <= 0:
            raise ConfigError(f"optimizer.base_lr must be > 0 and optimizer.base_batch >= 1 "
                              f"(got {self.optimizer.base_lr}, {self.optimizer.base_batch})")

    @property
    def lr_scale(self) -> float:
        """batch_size / base_batch: the linear scaling rule (Goyal et al. 2017) VISSL and MAE apply."""
        return self.batch_size / self.optimizer.base_batch

    @property
    def lr(self) -> float:
        """The effective peak lr at this batch size, before a head's lr multiplier."""
        return self.optimizer.base_lr * self.lr_scale

    def lr_record(self) -> dict[str, float]:
        """What a result JSON's ``optimizer`` field holds."""
        return {"base_lr": self.optimizer.base_lr, "base_batch": self.optimizer.base_batch, "effective_lr": self.lr}


def lr_at(cfg: LinearTrainConfig, step: int, steps_per_epoch: int) -> float:
    """Learning rate (before the head's multiplier) at optimisation step ``step``."""
    sched, peak = cfg.schedule, cfg.lr
    epoch = step / steps_per_epoch
    if epoch < sched.warmup_epochs:
        return peak * (step + 1) / (sched.warmup_epochs * steps_per_epoch)
    if sched.name == "step":
        return peak * sched.gamma ** sum(epoch >= m for m in sched.milestones)
    if sched.update_interval == "epoch":  # VISSL/ClassyVision: the scheduler is called once, at epoch start
        step = int(epoch) * steps_per_epoch
    total = cfg.epochs * steps_per_epoch
    start = sched.warmup_epochs * steps_per_epoch
    progress = min(1.0, max(0.0, step - start) / max(1.0, total - start))
    final = sched.final_lr * cfg.lr_scale
    return final + 0.5 * (peak - final) * (1 + math.cos(math.pi * progress))


def init_linear(dim: int, num_classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """nn.Linear's default init (kaiming_uniform a=√5 = U(±1/√F), bias U(±1/√F)) from a private generator:
    weight [F, C], bias [C]. Same seed, same head, whatever grid it sits in."""
    g = torch.Generator().manual_seed(seed)
    bound = 1.0 / math.sqrt(dim)
    weight = torch.empty(dim, num_classes).uniform_(-bound, bound, generator=g)
    return weight, torch.empty(num_classes).uniform_(-bound, bound, generator=g)


class _HeadGroup:
    """Heads reading the same input (representation, with or without BN): one weight tensor [F, H, C];
    BN heads also hold their affine γ, β [H, F]."""

    def __init__(self, members: list[int], specs: Sequence[HeadSpec], dim: int, num_classes: int,
                 seed: int, device: torch.device, bn: bool):
        self.members = members
        weights, biases = zip(*(init_linear(dim, num_classes, seed) for _ in members), strict=True)
        self.weight = torch.stack(weights, dim=1).to(device).requires_grad_()  # [F, H, C]
        self.bias = torch.stack(biases).to(device).requires_grad_()  # [H, C]
        self.affine = [torch.ones(len(members), dim, device=device, requires_grad=True),
                       torch.zeros(len(members), dim, device=device, requires_grad=True)] if bn else []
        self.lr_mult = torch.tensor([specs[i].lr_mult for i in members], device=device)
        self.wd = torch.tensor([specs[i].wd for i in members], device=device)
        self.momentum_buffers = [torch.zeros_like(p) for p in self.params]
        self.index = torch.tensor(members, device=device)  # positions of these heads in the grid

    @property
    def params(self) -> list[torch.Tensor]:
        """weight, bias, then (BN heads) γ, β."""
        return [self.weight, self.bias, *self.affine]

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """[B, H, C]; ``x`` is the (shared, normalised) input [B, F]."""
        f, h, c = self.weight.shape
        weight, bias = self.weight, self.bias
        if self.affine:  # fold each head's BN affine into its linear layer: one matmul for all heads
            gamma, beta = self.affine
            weight = weight * gamma.t().unsqueeze(-1)
            bias = bias + torch.einsum("hf,fhc->hc", beta, self.weight)
        return (x @ weight.reshape(f, h * c)).view(-1, h, c) + bias


class LinearGrid:
    """Many linear heads over frozen features, trained jointly. Use :func:`fit_linear_grid` for cached features."""

    def __init__(self, specs: Sequence[HeadSpec], dims: Mapping[str, int], num_classes: int,
                 cfg: LinearTrainConfig, *, seed: int = 0, device: str | torch.device = "cpu"):
        if not specs:
            raise ConfigError("the head grid is empty; give at least one representation, head, lr_mult and wd")
        self.specs, self.cfg, self.num_classes = list(specs), cfg, num_classes
        self.device = normalize(device)
        missing = {s.representation for s in specs} - set(dims)
        if missing:
            raise ConfigError(unknown_choice("representation", sorted(missing)[0], dims))
        keys: dict[tuple[str, bool], list[int]] = {}
        for i, s in enumerate(self.specs):
            keys.setdefault((s.representation, s.head == "bn_linear"), []).append(i)
        self.groups = {k: _HeadGroup(m, self.specs, dims[k[0]], num_classes, seed, self.device, bn=k[1])
                       for k, m in keys.items()}
        # BatchNorm running statistics, one per representation that has BN heads (the affine is per head).
        self.bn_stats = {r: (torch.zeros(dims[r], device=self.device), torch.ones(dims[r], device=self.device))
                         for r, bn in keys if bn}
        order = [i for g in self.groups.values() for i in g.members]
        self._unpermute = torch.argsort(torch.tensor(order)).to(self.device)
        self.step_count = 0
        self._reset_epoch_stats()

    @property
    def representations(self) -> list[str]:
        return sorted({s.representation for s in self.specs})

    def _reset_epoch_stats(self) -> None:
        h = len(self.specs)
        self._loss_sum = torch.zeros(h, device=self.device, dtype=torch.float64)
        self._correct = torch.zeros(h, device=self.device, dtype=torch.float64)
        self._seen = 0

    def _inputs(self, reps: Mapping[str, torch.Tensor], train: bool) -> dict[tuple[str, bool], torch.Tensor]:
        out = {}
        for rep, bn in self.groups:
            x = reps[rep].to(self.device, torch.float32, non_blocking=True)
            if bn:
                mean, var = self.bn_stats[rep]
                x = F.batch_norm(x, mean, var, training=train, momentum=BN_MOMENTUM, eps=BN_EPS)
            out[(rep, bn)] = x
        return out

    def logits(self, reps: Mapping[str, torch.Tensor], train: bool = False) -> torch.Tensor:
        """[H, B, C] logits of every head, in ``specs`` order."""
        inputs = self._inputs(reps, train)
        out = torch.cat([g.logits(inputs[k]) for k, g in self.groups.items()], dim=1)  # [B, H, C]
        return out.index_select(1, self._unpermute).transpose(0, 1)

    def train_step(self, reps: Mapping[str, torch.Tensor], labels: torch.Tensor, steps_per_epoch: int) -> None:
        """One SGD/LARS step of every head on one batch. No host sync: statistics stay on device."""
        labels = labels.to(self.device, non_blocking=True)
        inputs = self._inputs(reps, train=True)
        total, stats = 0.0, []
        for key, g in self.groups.items():
            logits = g.logits(inputs[key])  # [B, H, C]
            b, h, c = logits.shape
            losses = F.cross_entropy(logits.reshape(b * h, c), labels.repeat_interleave(h), reduction="none")
            per_head = losses.view(b, h).mean(0)
            total = total + per_head.sum()  # heads are independent: the sum keeps each head's gradient
            stats.append((g, per_head.detach(), (logits.detach().argmax(-1) == labels.view(-1, 1)).sum(0)))
        params = [p for g in self.groups.values() for p in g.params]
        grads = iter(torch.autograd.grad(total, params))
        lr = lr_at(self.cfg, self.step_count, steps_per_epoch)
        with torch.no_grad():
            for g in self.groups.values():
                self._update(g, [next(grads) for _ in g.params], lr)
            for g, loss, correct in stats:
                self._loss_sum.index_add_(0, g.index, loss.double() * labels.shape[0])
                self._correct.index_add_(0, g.index, correct.double())
        self._seen += labels.shape[0]
        self.step_count += 1

    def _update(self, g: _HeadGroup, grads: list[torch.Tensor], lr: float) -> None:
        """In place on the fresh gradients, to keep allocations (and kernels) per step few.

        weight: wd, and the LARS trust ratio per head; bias: wd when ``regularize_bias``, never adapted;
        BN γ, β: neither (VISSL regularize_bn False; LARS excludes 1-D parameters).
        """
        opt = self.cfg.optimizer
        lr_h = g.lr_mult * lr  # [H]
        shapes = [(1, -1, 1), (-1, 1), (-1, 1), (-1, 1)]  # per-head broadcasting of weight, bias, γ, β
        d_w = grads[0].addcmul_(g.weight, g.wd.view(1, -1, 1))
        if opt.name == "lars":
            p_norm = g.weight.norm(dim=(0, 2))
            u_norm = d_w.norm(dim=(0, 2))
            ratio = torch.where((p_norm > 0) & (u_norm > 0), opt.trust_coefficient * p_norm / u_norm,
                                torch.ones_like(p_norm))
            d_w.mul_(ratio.view(1, -1, 1))
        if opt.regularize_bias:
            grads[1].addcmul_(g.bias, g.wd.view(-1, 1))
        for p, d, buf, shape in zip(g.params, grads, g.momentum_buffers, shapes, strict=False):
            buf.mul_(opt.momentum).add_(d)
            step = d.add_(buf, alpha=opt.momentum) if opt.nesterov else buf
            p.addcmul_(step, lr_h.view(shape), value=-1.0)

    def end_epoch(self) -> list[dict[str, float]]:
        """Mean train loss and top-1 (percent) of every head over the epoch (one host sync)."""
        n = max(self._seen, 1)
        loss = (self._loss_sum / n).cpu().tolist()
        acc = (self._correct * 100.0 / n).cpu().tolist()
        self._reset_epoch_stats()
        return [{"loss": a, "top1": b} for a, b in zip(loss, acc, strict=True)]

    @torch.no_grad()
    def predict(self, batches: Iterable[tuple[Mapping[str, torch.Tensor], torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        """([H, N, k] top-k classes of every head, [N] labels) over (representations, labels) batches."""
        preds, labels = [], []
        for reps, y in batches:
            preds.append(topk_predictions(self.logits(reps)))
            labels.append(y)  # moved once by scores_from_topk, not with a blocking copy per batch
        return torch.cat(preds, 1), torch.cat(labels)


def resident(features: Mapping[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Move features to the device when they fit comfortably (one copy beats a transfer per batch).

    Views of one tensor (lastPOOL as the last columns of concatPOOL4) stay views of a single copy.
    """
    if device.type == "cpu":
        return dict(features)
    bases: dict[int, torch.Tensor] = {}
    for t in features.values():
        key = t.untyped_storage().data_ptr()
        if key not in bases or t.numel() > bases[key].numel():
            bases[key] = t
    if not fits(sum(t.numel() * 4 for t in bases.values()), device):
        return dict(features)  # FIXME: per-batch host->device copies; pinned double-buffering would overlap them
    moved = {k: b.to(device, torch.float32) for k, b in bases.items()}
    out = {}
    for name, t in features.items():
        base = bases[t.untyped_storage().data_ptr()]
        shares_layout = base.is_contiguous() and base.storage_offset() == 0 and t.dtype == base.dtype
        out[name] = (moved[t.untyped_storage().data_ptr()].as_strided(t.shape, t.stride(), t.storage_offset())
                     if shares_layout else t.to(device, torch.float32))
    return out


def iterate_batches(features: Mapping[str, torch.Tensor], labels: torch.Tensor, index: torch.Tensor,
                    batch_size: int):
    """(representations, labels) batches over the rows ``index`` (kept in order).

    The index moves to the features' and the labels' devices once per pass: a blocking host->device copy
    per batch would synchronise the stream at every training step.
    """
    feature_rows = index.to(next(iter(features.values())).device)
    label_rows = index.to(labels.device)
    for f_rows, l_rows in zip(feature_rows.split(batch_size), label_rows.split(batch_size), strict=True):
        yield {k: v[f_rows] for k, v in features.items()}, labels[l_rows]


def fit_linear_grid(features: Mapping[str, torch.Tensor], labels: torch.Tensor, specs: Sequence[HeadSpec],
                    cfg: LinearTrainConfig, num_classes: int, *, index: torch.Tensor | None = None,
                    seed: int = 0, device: str | torch.device | None = None,
                    progress: bool = True, desc: str = "linear grid") -> tuple[LinearGrid, list[dict[str, float]]]:
    """Train every head of ``specs`` on cached ``features`` (name -> [N, F]) rows ``index`` (default all).

    Shuffling uses a seeded CPU generator, so a run is reproducible on any device. The last batch is
    dropped only when it holds a single sample (BatchNorm cannot normalise one row). Returns the grid and
    every head's last-epoch train loss / top-1.
    """
    device = normalize(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    needed = {s.representation for s in specs}
    for name in sorted(needed - set(features)):
        raise ConfigError(unknown_choice("representation", name, features))
    feats = resident({k: v for k, v in features.items() if k in needed}, device)
    labels = torch.as_tensor(labels, dtype=torch.int64)
    labels = labels.to(device) if next(iter(feats.values())).device == device else labels
    index = torch.arange(len(labels)) if index is None else torch.as_tensor(index, dtype=torch.int64)
    if len(index) < 2:
        raise ConfigError(f"cannot train a linear probe on {len(index)} sample(s); need at least 2")
    dims = {k: v.shape[1] for k, v in feats.items()}
    grid = LinearGrid(specs, dims, num_classes, cfg, seed=seed, device=device)
    full, rest = divmod(len(index), cfg.batch_size)
    steps_per_epoch = full + (rest > 1)
    gen = torch.Generator().manual_seed(seed)
    stats: list[dict[str, float]] = []
    bar = tqdm(range(cfg.epochs), desc=desc, unit="ep", disable=not progress, leave=False)
    for _ in bar:
        order = index[torch.randperm(len(index), generator=gen)][: steps_per_epoch * cfg.batch_size]
        for reps, y in iterate_batches(feats, labels, order, cfg.batch_size):
            grid.train_step(reps, y, steps_per_epoch)
        stats = grid.end_epoch()
        bar.set_postfix(loss=min(s["loss"] for s in stats), top1=max(s["top1"] for s in stats))
    return grid, stats


def predict_grid(grid: LinearGrid, features: Mapping[str, torch.Tensor], labels: torch.Tensor,
                 index: torch.Tensor | None = None, batch_size: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """([H, N, k] every head's top-k classes, [N] labels) on cached features (rows ``index``, default all)."""
    feats = resident({k: v for k, v in features.items() if k in grid.representations}, grid.device)
    labels = torch.as_tensor(labels, dtype=torch.int64)
    index = torch.arange(len(labels)) if index is None else torch.as_tensor(index, dtype=torch.int64)
    return grid.predict(iterate_batches(feats, labels, index, batch_size))


def evaluate_grid(grid: LinearGrid, features: Mapping[str, torch.Tensor], labels: torch.Tensor,
                  index: torch.Tensor | None = None, batch_size: int = 4096) -> list[dict[str, float]]:
    """Every head's top1/top5/mean-per-class on cached features (rows ``index``, default all)."""
    return scores_from_topk(*predict_grid(grid, features, labels, index, batch_size), grid.num_classes)
