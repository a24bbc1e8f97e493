"""A grid of linear heads trained jointly in one pass over frozen features (the paper's 16-head sweep).

The paper reports, per protocol, the best of {lastPOOL, concatPOOL4} × {BatchNorm+linear, linear} ×
lr multiplier {1, 0.1} × weight decay {5e-4, 0}. Training 16 probes one after the other costs 16 passes;
here all heads that read the same input share one matmul (weights stored [F, H, C] so a group is a single
``x @ W.view(F, H*C)``) and one vectorised optimizer step with per-head lr and wd tensors, so the grid
costs about one head. BatchNorm1d(affine=False) has no parameters, so every BN head of a representation
shares one normalisation. Each head is initialised from the same seed whatever the grid, which makes a
head trained in a grid identical to the same head trained alone (tested).
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

from ijepa_eval.errors import ConfigError, unknown_choice
from ijepa_eval.probes.metrics import scores_from_topk, topk_predictions

HeadKind = Literal["bn_linear", "linear"]
OptimizerName = Literal["sgd", "lars"]
ScheduleName = Literal["step", "cosine"]


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
    lr: float = 0.01  # base lr; each head uses lr * lr_mult
    momentum: float = 0.9
    nesterov: bool = False
    trust_coefficient: float = 0.001  # LARS eta (MAE/MoCo v3 LARS)


@dataclass
class ScheduleConfig:
    name: ScheduleName = "step"
    milestones: list[int] = field(default_factory=list)  # epochs (step schedule)
    gamma: float = 0.1
    final_lr: float = 0.0  # cosine end value, before lr_mult
    warmup_epochs: float = 0.0  # linear warm-up from 0


@dataclass
class LinearTrainConfig:
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    epochs: int = 10
    batch_size: int = 256

    def __post_init__(self) -> None:
        check_choice("optimizer", self.optimizer.name, OptimizerName)
        check_choice("schedule", self.schedule.name, ScheduleName)
        if self.epochs < 1 or self.batch_size < 2:
            raise ConfigError(f"epochs must be >= 1 and batch_size >= 2 (got {self.epochs}, {self.batch_size})")


def base_lr(cfg: LinearTrainConfig, step: int, steps_per_epoch: int) -> float:
    """Learning rate (before the head's multiplier) at optimisation step ``step``."""
    opt, sched = cfg.optimizer, cfg.schedule
    epoch = step / steps_per_epoch
    if epoch < sched.warmup_epochs:
        return opt.lr * (step + 1) / (sched.warmup_epochs * steps_per_epoch)
    if sched.name == "step":
        return opt.lr * sched.gamma ** sum(epoch >= m for m in sched.milestones)
    total = cfg.epochs * steps_per_epoch
    start = sched.warmup_epochs * steps_per_epoch
    progress = min(1.0, (step - start) / max(1.0, total - start))
    return sched.final_lr + 0.5 * (opt.lr - sched.final_lr) * (1 + math.cos(math.pi * progress))


class _HeadGroup:
    """Heads reading the same input (representation, with or without BN): one weight tensor [F, H, C]."""

    def __init__(self, members: list[int], specs: Sequence[HeadSpec], dim: int, num_classes: int,
                 seed: int, device: torch.device):
        self.members = members
        # Same init for a head whatever grid it sits in: every head draws from a fresh generator.
        weights = []
        for _ in members:
            g = torch.Generator().manual_seed(seed)
            weights.append(torch.randn(dim, num_classes, generator=g) * 0.01)
        self.weight = torch.stack(weights, dim=1).to(device).requires_grad_()  # [F, H, C]
        self.bias = torch.zeros(len(members), num_classes, device=device, requires_grad=True)
        self.lr_mult = torch.tensor([specs[i].lr_mult for i in members], device=device)
        self.wd = torch.tensor([specs[i].wd for i in members], device=device)
        self.momentum_buffers = [torch.zeros_like(self.weight), torch.zeros_like(self.bias)]
        self.index = torch.tensor(members, device=device)  # positions of these heads in the grid

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        f, h, c = self.weight.shape
        return (x @ self.weight.view(f, h * c)).view(-1, h, c) + self.bias  # [B, H, C]


class LinearGrid:
    """Many linear heads over frozen features, trained jointly. Use :func:`fit_linear_grid` for cached features."""

    def __init__(self, specs: Sequence[HeadSpec], dims: Mapping[str, int], num_classes: int,
                 cfg: LinearTrainConfig, *, seed: int = 0, device: str | torch.device = "cpu"):
        if not specs:
            raise ConfigError("the head grid is empty; give at least one representation, head, lr_mult and wd")
        self.specs, self.cfg, self.num_classes = list(specs), cfg, num_classes
        self.device = torch.device(device)
        missing = {s.representation for s in specs} - set(dims)
        if missing:
            raise ConfigError(unknown_choice("representation", sorted(missing)[0], dims))
        keys: dict[tuple[str, bool], list[int]] = {}
        for i, s in enumerate(self.specs):
            keys.setdefault((s.representation, s.head == "bn_linear"), []).append(i)
        self.groups = {k: _HeadGroup(m, self.specs, dims[k[0]], num_classes, seed, self.device)
                       for k, m in keys.items()}
        # BatchNorm1d(affine=False) running statistics, one per representation that has BN heads.
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
                x = F.batch_norm(x, mean, var, training=train, momentum=0.1, eps=1e-5)
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
        params = [p for g in self.groups.values() for p in (g.weight, g.bias)]
        grads = torch.autograd.grad(total, params)
        lr = base_lr(self.cfg, self.step_count, steps_per_epoch)
        with torch.no_grad():
            for i, g in enumerate(self.groups.values()):
                self._update(g, grads[2 * i], grads[2 * i + 1], lr)
            for g, loss, correct in stats:
                self._loss_sum.index_add_(0, g.index, loss.double() * labels.shape[0])
                self._correct.index_add_(0, g.index, correct.double())
        self._seen += labels.shape[0]
        self.step_count += 1

    def _update(self, g: _HeadGroup, grad_w: torch.Tensor, grad_b: torch.Tensor, lr: float) -> None:
        """In place on the fresh gradients, to keep allocations (and kernels) per step few."""
        opt = self.cfg.optimizer
        lr_h = g.lr_mult * lr  # [H]
        d_w = grad_w.addcmul_(g.weight, g.wd.view(1, -1, 1))
        if opt.name == "sgd":  # torch.optim.SGD semantics (dampening 0), weight decay on weights and biases
            d_b = grad_b.addcmul_(g.bias, g.wd.view(-1, 1))
        else:  # LARS (MAE/MoCo v3): trust ratio per head on weights; biases neither decayed nor scaled
            p_norm = g.weight.norm(dim=(0, 2))
            u_norm = d_w.norm(dim=(0, 2))
            ratio = torch.where((p_norm > 0) & (u_norm > 0), opt.trust_coefficient * p_norm / u_norm,
                                torch.ones_like(p_norm))
            d_w, d_b = d_w.mul_(ratio.view(1, -1, 1)), grad_b
        for p, d, buf, shape in ((g.weight, d_w, g.momentum_buffers[0], (1, -1, 1)),
                                 (g.bias, d_b, g.momentum_buffers[1], (-1, 1))):
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

    def evaluate(self, batches: Iterable[tuple[Mapping[str, torch.Tensor], torch.Tensor]]) -> list[dict[str, float]]:
        """Scores of every head on (representations, labels) batches; see probes.metrics."""
        return scores_from_topk(*self.predict(batches), self.num_classes)


def _resident(features: Mapping[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Move features to the device when they fit comfortably (one copy beats a transfer per batch).

    Views of one tensor (lastPOOL as the last columns of concatPOOL4) stay views of a single copy.
    """
    if device.type != "cuda":
        return dict(features)
    bases: dict[int, torch.Tensor] = {}
    for t in features.values():
        key = t.untyped_storage().data_ptr()
        if key not in bases or t.numel() > bases[key].numel():
            bases[key] = t
    need = sum(t.numel() * 4 for t in bases.values())
    free, _ = torch.cuda.mem_get_info(device)
    if need > 0.5 * free:
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
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    needed = {s.representation for s in specs}
    for name in sorted(needed - set(features)):
        raise ConfigError(unknown_choice("representation", name, features))
    feats = _resident({k: v for k, v in features.items() if k in needed}, device)
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
    feats = _resident({k: v for k, v in features.items() if k in grid.representations}, grid.device)
    labels = torch.as_tensor(labels, dtype=torch.int64)
    index = torch.arange(len(labels)) if index is None else torch.as_tensor(index, dtype=torch.int64)
    return grid.predict(iterate_batches(feats, labels, index, batch_size))


def evaluate_grid(grid: LinearGrid, features: Mapping[str, torch.Tensor], labels: torch.Tensor,
                  index: torch.Tensor | None = None, batch_size: int = 4096) -> list[dict[str, float]]:
    """Every head's top1/top5/mean-per-class on cached features (rows ``index``, default all)."""
    return scores_from_topk(*predict_grid(grid, features, labels, index, batch_size), grid.num_classes)
