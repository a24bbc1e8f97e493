"""A grid of attentive probes trained side by side on the same token batches: one encoder forward for all.

Every probe is a V-JEPA ``AttentiveClassifier`` with its own AdamW, GradScaler and schedules, and each
training step does for every probe what V-JEPA's ``evals/image_classification_frozen/eval.py``
(``run_one_epoch``) does for its one: set this iteration's lr and weight decay (``WarmupCosineSchedule``,
``CosineWDSchedule``, stepped before the update), forward under autocast, cross-entropy, backward through
the GradScaler, unscale, clip the gradient norm, step, zero the gradients. Probes share nothing but the
input tokens, so a probe trained in a grid equals the same probe trained alone (tested, bit for bit on
CPU); every probe starts from the same seed's initialisation, so grid members differ only in (lr, wd).

Parameter groups are V-JEPA's ``init_opt``: weights in one group, biases and 1-D parameters (LayerNorm)
in a second with ``WD_exclude`` and weight decay 0, so our AdamW state dict loads into its optimizer.
V-JEPA 2 (``exclude_bias_and_norm: false``) decays every parameter in a single group and does not clip.

Learning rates are stated per ``base_batch`` images (1024 = V-JEPA's 16 per GPU × 64 GPUs); the run uses
lr × batch_size / base_batch, the rule the other recipes follow (V-JEPA itself never changes its batch).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import product
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ijepa_eval.devices import fits
from ijepa_eval.errors import ConfigError
from ijepa_eval.probes.attentive import AttentiveClassifier, Variant
from ijepa_eval.probes.metrics import topk_predictions
from ijepa_eval.schedules import cosine_wd, warmup_cosine_lr

Precision = Literal["float16", "bfloat16", "float32"]
TokenSource = Literal["online", "cached"]
TransformKind = Literal["vjepa", "dataset"]
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


@dataclass
class AttentiveSpec:
    """The attentive probe and its optimisation (a recipe's ``attentive:`` section)."""

    variant: Variant = "vjepa"
    depth: int = 1  # 1 = cross-attention block only; V-JEPA 2 uses 4 (num_probe_blocks)
    num_heads: int | None = None  # None: the encoder's (V-JEPA: encoder.num_heads)
    mlp_ratio: float = 4.0
    lrs: list[float] = field(default_factory=lambda: [1e-3])  # peak lr per base_batch images (grid axis)
    wds: list[float] = field(default_factory=lambda: [1e-3])  # starting weight decay (grid axis)
    base_batch: int = 1024
    start_lr: float | None = None  # warm-up start per base_batch; None = the probe's lr (V-JEPA: start_lr = lr)
    warmup_epochs: float = 0.0
    final_lr: float = 0.0
    final_wd: float | None = 1e-6  # None = constant at the probe's wd (V-JEPA 2's grid)
    exclude_bias_and_norm: bool = True  # V-JEPA: no decay on biases and 1-D parameters; V-JEPA 2: decay all
    clip_grad: float | None = 1.0  # V-JEPA: clip_grad_norm_ 1.0 after unscale; V-JEPA 2: none
    precision: Precision = "float16"  # probe autocast on CUDA (V-JEPA: float16 + GradScaler); CPU runs float32
    tokens: TokenSource = "online"  # online: encoder every step on fresh augmentations; cached: stored tokens
    # vjepa: timm create_transform(auto_augment='original', bicubic, re_prob 0.25 pixel) / Resize(int(s*256/224))
    # + CenterCrop(s); dataset: the dataset's VISSL transforms (CLEVR: whole image to s x s, + flip when training)
    transforms: TransformKind = "vjepa"
    linear_pair: str | None = None  # the linear-probe recipe on the same data, which `compare` pairs it with


@dataclass(frozen=True)
class ProbeHyper:
    """One grid member: its peak lr (per base_batch) and starting weight decay."""

    lr: float
    wd: float

    @property
    def name(self) -> str:
        return f"attentive/lr{self.lr:g}/wd{self.wd:g}"

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "lr": self.lr, "wd": self.wd}


def grid_members(spec: AttentiveSpec) -> list[ProbeHyper]:
    """lrs × wds, lr outermost (V-JEPA 2's multihead_kwargs order)."""
    if not spec.lrs or not spec.wds:
        raise ConfigError("the attentive grid is empty; give at least one value in attentive.lrs and attentive.wds")
    return [ProbeHyper(float(lr), float(wd)) for lr, wd in product(spec.lrs, spec.wds)]


def param_groups(probe: nn.Module, exclude_bias_and_norm: bool) -> list[dict[str, Any]]:
    """V-JEPA's ``init_opt`` groups (same parameter order, so optimizer state dicts line up)."""
    if not exclude_bias_and_norm:
        return [{"params": list(probe.parameters())}]
    named = list(probe.named_parameters())
    no_decay = [p for n, p in named if "bias" in n or p.ndim == 1]
    decay = [p for n, p in named if not ("bias" in n or p.ndim == 1)]
    return [{"params": decay}, {"params": no_decay, "WD_exclude": True, "weight_decay": 0.0}]


def build_probe(spec: AttentiveSpec, embed_dim: int, num_heads: int, num_classes: int, seed: int) -> AttentiveClassifier:
    """V-JEPA's classifier, initialised from ``seed`` alone (the caller's RNG streams are untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AttentiveClassifier(embed_dim, spec.num_heads or num_heads, num_classes, depth=spec.depth,
                                   mlp_ratio=spec.mlp_ratio, variant=spec.variant)


class AttentiveGrid:
    """Probes of ``grid_members(spec)`` over tokens [B, N, D]; ``train_step`` once per global batch."""

    def __init__(self, spec: AttentiveSpec, embed_dim: int, num_heads: int, num_classes: int, *, batch_size: int,
                 steps_per_epoch: int, epochs: int, seed: int = 0, device: str | torch.device = "cpu",
                 ddp: bool = False):
        if steps_per_epoch < 1 or epochs < 1 or batch_size < 1:
            raise ConfigError(f"attentive probe needs epochs, batch_size and steps per epoch >= 1 "
                              f"(got {epochs}, {batch_size}, {steps_per_epoch})")
        self.spec, self.num_classes, self.device, self.ddp = spec, num_classes, torch.device(device), ddp
        self.members = grid_members(spec)
        self.total_steps, self.warmup_steps = epochs * steps_per_epoch, int(spec.warmup_epochs * steps_per_epoch)
        self.lr_scale = batch_size / spec.base_batch
        self.probes = [build_probe(spec, embed_dim, num_heads, num_classes, seed).to(self.device)
                       for _ in self.members]
        # static_graph: V-JEPA's choice, and it tolerates xattn.proj, which never receives a gradient
        self.nets = [nn.parallel.DistributedDataParallel(p, static_graph=True) if ddp else p for p in self.probes]
        self.optimizers = [torch.optim.AdamW(param_groups(p, spec.exclude_bias_and_norm)) for p in self.probes]
        amp = spec.precision != "float32" and self.device.type == "cuda"
        self.autocast_dtype = DTYPES[spec.precision] if amp else None
        scale = amp and spec.precision == "float16"  # V-JEPA: a GradScaler exactly when it autocasts to float16
        self.scalers = [torch.amp.GradScaler(self.device.type, enabled=scale) for _ in self.probes]
        self.step_count = 0
        self._reset_epoch_stats()

    def schedule(self, member: ProbeHyper, step: int) -> tuple[float, float]:
        """(lr, weight decay) that ``member`` trains with at 0-based ``step``."""
        spec, scale = self.spec, self.lr_scale
        start = spec.start_lr if spec.start_lr is not None else member.lr
        lr = warmup_cosine_lr(step, self.warmup_steps, self.total_steps, start * scale, member.lr * scale,
                              spec.final_lr * scale)
        final_wd = spec.final_wd if spec.final_wd is not None else member.wd
        return lr, cosine_wd(step, self.total_steps, member.wd, final_wd)

    def lr_record(self) -> dict[str, Any]:
        """The result JSON's ``optimizer`` field: base and effective lr of every grid member."""
        return {"name": "adamw", "base_lr": [m.lr for m in self.members], "base_batch": self.spec.base_batch,
                "effective_lr": [m.lr * self.lr_scale for m in self.members]}

    def _autocast(self):
        return torch.autocast(self.device.type, self.autocast_dtype or torch.float32,
                              enabled=self.autocast_dtype is not None)

    def _reset_epoch_stats(self) -> None:
        self._loss_sum = torch.zeros(len(self.members), dtype=torch.float64, device=self.device)
        self._correct = torch.zeros(len(self.members), dtype=torch.float64, device=self.device)
        self._seen = 0

    def train_step(self, tokens: torch.Tensor, labels: torch.Tensor) -> None:
        """One update of every probe on one batch (no host sync: statistics stay on the device)."""
        tokens = tokens.to(self.device, non_blocking=True)
        labels = labels.to(self.device, non_blocking=True)
        for i, (member, net, probe, opt, scaler) in enumerate(
                zip(self.members, self.nets, self.probes, self.optimizers, self.scalers, strict=True)):
            lr, wd = self.schedule(member, self.step_count)
            for group in opt.param_groups:
                group["lr"] = lr
                if not group.get("WD_exclude"):
                    group["weight_decay"] = wd
            probe.train()
            with self._autocast():
                logits = net(tokens)
            loss = F.cross_entropy(logits.float(), labels)
            scaler.scale(loss).backward()
            if self.spec.clip_grad is not None:
                scaler.unscale_(opt)
                nn.utils.clip_grad_norm_(probe.parameters(), self.spec.clip_grad)
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
            with torch.no_grad():
                self._loss_sum[i] += loss.detach().double() * len(labels)
                self._correct[i] += (logits.argmax(-1) == labels).sum()
        self._seen += len(labels)
        self.step_count += 1

    def running_loss(self) -> float:
        """The lowest mean train loss of any probe so far this epoch (this process's batches; a host sync)."""
        return (self._loss_sum / max(self._seen, 1)).min().item()

    def end_epoch(self) -> list[dict[str, float]]:
        """Mean train loss and top-1 (percent) of every probe since the last call, over every rank's batches
        under DDP (one host sync)."""
        sums = torch.stack([self._loss_sum, self._correct, torch.full_like(self._loss_sum, self._seen)])
        if self.ddp:
            torch.distributed.all_reduce(sums)
        n = sums[2].clamp(min=1)
        loss, acc = (sums[0] / n).tolist(), (sums[1] * 100.0 / n).tolist()
        self._reset_epoch_stats()
        return [{"loss": a, "top1": b} for a, b in zip(loss, acc, strict=True)]

    @torch.no_grad()
    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """[H, B, C] float32 logits of every probe (eval mode, the training autocast)."""
        tokens = tokens.to(self.device, non_blocking=True)
        out = []
        for probe in self.probes:
            probe.eval()
            with self._autocast():
                out.append(probe(tokens).float())
        return torch.stack(out)

    def topk(self, tokens: torch.Tensor) -> torch.Tensor:
        """[H, B, k] every probe's top-5 classes."""
        return topk_predictions(self.logits(tokens))

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs: weights, AdamW and GradScaler states, the step count."""
        return {"probes": [p.state_dict() for p in self.probes], "optimizers": [o.state_dict() for o in self.optimizers],
                "scalers": [s.state_dict() for s in self.scalers], "step": self.step_count,
                "members": [m.as_dict() for m in self.members]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["members"] != [m.as_dict() for m in self.members]:
            raise ConfigError("the saved attentive grid has other members (lrs x wds); resume with the same recipe")
        for probe, opt, scaler, p_state, o_state, s_state in zip(
                self.probes, self.optimizers, self.scalers, state["probes"], state["optimizers"], state["scalers"],
                strict=True):
            probe.load_state_dict(p_state)
            opt.load_state_dict(o_state)
            scaler.load_state_dict(s_state)
        self.step_count = state["step"]


def token_batches(tokens: torch.Tensor, labels: torch.Tensor, batch_size: int,
                  generator: torch.Generator | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of (tokens [b, N, D] float32, labels [b]); shuffled when a generator is given. The last
    batch is kept however small (V-JEPA's loaders: ``drop_last=False``)."""
    order = torch.randperm(len(labels), generator=generator) if generator is not None else torch.arange(len(labels))
    for rows in order.split(batch_size):
        yield tokens[rows.to(tokens.device)].float(), labels[rows]


def fit_on_tokens(tokens: torch.Tensor, labels: torch.Tensor, spec: AttentiveSpec, num_classes: int, *,
                  num_heads: int, epochs: int, batch_size: int, seed: int = 0,
                  device: str | torch.device = "cpu", progress: bool = True,
                  desc: str = "attentive grid") -> tuple[AttentiveGrid, list[dict[str, float]]]:
    """Train the grid on stored tokens [N, T, D] (``tokens: cached``: no augmentation, a seeded order per
    epoch), held on ``device`` when they fit in half its free memory (``devices.fits``). Returns the grid and every probe's last-epoch train loss / top-1."""
    if len(labels) < 1:
        raise ConfigError("cannot train an attentive probe on 0 samples")
    labels = torch.as_tensor(labels, dtype=torch.int64)
    if fits(tokens.numel() * tokens.element_size(), device):  # copied once, not once per step and epoch
        tokens = tokens.to(device)
    steps = -(-len(labels) // batch_size)
    grid = AttentiveGrid(spec, tokens.shape[-1], num_heads, num_classes, batch_size=batch_size,
                         steps_per_epoch=steps, epochs=epochs, seed=seed, device=device)
    gen = torch.Generator().manual_seed(seed)
    stats: list[dict[str, float]] = []
    bar = tqdm(range(epochs), desc=desc, unit="ep", disable=not progress, leave=False)
    for _ in bar:
        for x, y in token_batches(tokens, labels, batch_size, gen):
            grid.train_step(x, y)
        stats = grid.end_epoch()
        bar.set_postfix(loss=min(s["loss"] for s in stats), top1=max(s["top1"] for s in stats),
                        lr=grid.schedule(grid.members[0], grid.step_count - 1)[0])
    return grid, stats


def predict_tokens(grid: AttentiveGrid, tokens: torch.Tensor, labels: torch.Tensor,
                   batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """([H, N, k] every probe's top-k classes, [N] labels) on stored tokens, in row order."""
    labels = torch.as_tensor(labels, dtype=torch.int64)
    preds = [grid.topk(x) for x, _ in token_batches(tokens, labels, batch_size)]
    return torch.cat(preds, 1).cpu(), labels
