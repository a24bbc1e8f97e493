"""The ``finetune:`` section of a protocol recipe (``probe: finetune``), in MAE ``main_finetune.py`` terms.

Names follow MAE's flags (``blr``, ``layer_decay``, ``smoothing``, ``reprob``, ``mixup``...) so a recipe
reads side by side with the command line that produced a paper number. No torch import here: recipes load
for ``--help`` and for tables.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from ijepa_eval.errors import ConfigError

HeadNorm = Literal["final", "fc_norm"]
Pool = Literal["auto", "avg", "cls"]
Keep = Literal["last", "best"]


@dataclass
class FinetuneSpec:
    blr: float = 1e-3  # base lr per `base_batch` images: lr = blr * global batch / base_batch (MAE's rule)
    base_batch: int = 256
    lr: float | None = None  # absolute lr; overrides blr when set (MAE --lr)
    min_lr: float = 1e-6
    warmup_epochs: float = 5.0
    weight_decay: float = 0.05
    layer_decay: float = 0.75
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    clip_grad: float | None = None
    smoothing: float = 0.1
    auto_augment: str | None = "rand-m9-mstd0.5-inc1"  # timm RandAugment policy string; null = none
    crop_scale: list[float] = field(default_factory=lambda: [0.08, 1.0])  # RandomResizedCrop area range
    hflip: float = 0.5
    reprob: float = 0.25  # random erasing probability
    remode: str = "pixel"
    recount: int = 1
    mixup: float = 0.0  # alpha; > 0 enables (then SoftTargetCrossEntropy with smoothed soft targets)
    cutmix: float = 0.0
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    mixup_mode: str = "batch"
    drop_path: float = 0.1
    head_init_std: float = 2e-5  # MAE: trunc_normal_(head.weight, std=2e-5)
    pool: Pool = "auto"  # "avg": mean of patch tokens (prefix tokens excluded); "cls": the cls token; "auto": cls if any
    head_norm: HeadNorm = "final"  # "final": pretrained norm on tokens, then pool; "fc_norm": pool, then a new LayerNorm
    keep: Keep = "last"  # weights reported: last epoch (no choice made) or best epoch on the selection split
    eval_every: int = 1  # epochs between selection-split evaluations (keep=best)
    micro_batch: int | None = None  # images per device per forward/backward; None = the default for the
    # model's size (`default_micro_batch`). Memory only: gradients are accumulated over the recipe's batch.
    eval_batch_size: int = 128
    # Recipe overrides per encoder width ({"1024": {"finetune.weight_decay": 0.05}}, dotted keys as on the
    # command line) where the reference gives one value per model size; applied once the encoder is known
    # (protocols/finetune_widths.py).
    by_width: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.betas) != 2 or len(self.crop_scale) != 2:
            raise ConfigError("finetune.betas and finetune.crop_scale take two numbers each, e.g. [0.9, 0.999]")
        if not 0.0 < self.layer_decay <= 1.0:
            raise ConfigError(f"finetune.layer_decay must be in (0, 1], got {self.layer_decay}")
        if self.eval_every < 1:
            raise ConfigError(f"finetune.eval_every={self.eval_every} is out of range; it must be >= 1")
        if self.micro_batch is not None and self.micro_batch < 1:
            raise ConfigError(f"finetune.micro_batch={self.micro_batch} is out of range; it must be >= 1 "
                              "(or null: the default for the model's size)")
        bad = [w for w in self.by_width if not w.isdigit()]
        if bad:
            raise ConfigError(f"finetune.by_width keys are encoder widths (embed_dim, e.g. 1024), got {bad}")

    def pool_for(self, has_class_token: bool) -> str:
        """The pooling this spec gives a model: "avg" or "cls" ("auto": the cls token when the model has one)."""
        pool = ("cls" if has_class_token else "avg") if self.pool == "auto" else self.pool
        if pool == "cls" and not has_class_token:
            raise ConfigError("finetune.pool=cls needs a model with a cls token; this encoder has none "
                              "(use finetune.pool=avg or auto)")
        return pool

    @property
    def mixup_active(self) -> bool:
        return self.mixup > 0 or self.cutmix > 0

    def effective_lr(self, global_batch: int) -> float:
        return self.lr if self.lr is not None else self.blr * global_batch / self.base_batch


# Tokens per device per forward/backward that fit, with the weights, gradients and AdamW state, in a 40 GB GPU
# under bf16 autocast, by encoder width (ViT-Ti/S, B, L, H, g): 32 ViT-H/14 images of 257 tokens hold about
# 12 GB of activations (34 bytes x tokens x width x depth, flash attention) next to 10 GB of fp32 state.
MICRO_BATCH_TOKENS = {384: 256 * 257, 768: 128 * 257, 1024: 64 * 257, 1280: 32 * 257, 1408: 16 * 257}


def default_micro_batch(embed_dim: int, tokens: int) -> int:
    """The largest power of two of images whose tokens stay within the width's budget (a width between two
    table rows takes the wider one's budget; wider than ViT-g, ViT-g's): at 448 px, a quarter of 224's."""
    budget = next((b for width, b in sorted(MICRO_BATCH_TOKENS.items()) if embed_dim <= width),
                  MICRO_BATCH_TOKENS[max(MICRO_BATCH_TOKENS)])
    return 2 ** max(0, int(math.log2(max(1, budget // tokens))))


@dataclass(frozen=True)
class BatchPlan:
    """How one optimisation step of ``global_batch`` images is computed: every one of ``world_size`` devices
    takes ``global_batch / world_size`` images as ``accum_steps`` forward/backward passes of ``micro_batch``."""

    global_batch: int
    world_size: int
    micro_batch: int
    accum_steps: int

    @property
    def per_device(self) -> int:
        return self.micro_batch * self.accum_steps

    def record(self) -> dict[str, Any]:
        """What the result JSON's ``optimizer`` field says about it."""
        return {"batch_size": self.global_batch, "world_size": self.world_size, "micro_batch": self.micro_batch,
                "accum_steps": self.accum_steps}


def batch_plan(global_batch: int, world_size: int, max_micro_batch: int) -> BatchPlan:
    """The fewest accumulation steps that split each device's share into equal micro-batches of at most
    ``max_micro_batch`` images; the step still sees the whole ``global_batch`` (gradients are averaged)."""
    if global_batch % world_size:
        raise ConfigError(f"batch_size {global_batch} is not divisible by {world_size} processes; "
                          f"use a multiple of {world_size}")
    per_device = global_batch // world_size
    accum = next(a for a in range(math.ceil(per_device / max_micro_batch), per_device + 1) if per_device % a == 0)
    return BatchPlan(global_batch, world_size, per_device // accum, accum)
