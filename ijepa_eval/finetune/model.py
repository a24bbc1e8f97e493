"""The trainable classifier and everything timm builds around it: head, drop path, layer-decay AdamW,
augmentation, mixup and loss. Only the lr schedule is a small function (MAE's ``util/lr_sched.py``).

The classifier is a copy of the Encoder's own timm ViT with a linear head: ``forward_features`` (blocks,
final norm) then timm's ``forward_head`` (pool, optional fc_norm, head). ``pool`` picks the mean of the patch
tokens (prefix tokens excluded) or the cls token; ``head_norm: final`` keeps the pretrained norm on the
tokens, so the head reads exactly the frozen ``lastPOOL`` / ``lastCLS`` feature; ``fc_norm`` drops it and
learns a fresh LayerNorm after pooling. MAE's ``main_finetune`` heads: ``--global_pool`` (its default) =
pool avg + fc_norm, on cls models too; ``--cls_token`` = pool cls + final.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

from ijepa_eval.finetune.config import FinetuneSpec

# MAE util/lr_decay.get_layer_id_for_vit: stem = layer 0, blocks.i = i + 1, everything else (final norm,
# fc_norm, head) = the top layer with lr scale 1. timm's own ViT matcher ties the final `norm` to the last
# block (scale = layer_decay), so the classifier carries MAE's map for timm's param_groups_layer_decay.
MAE_LAYERS = {"stem": r"^cls_token|reg_token|pos_embed|patch_embed|norm_pre", "blocks": [(r"^blocks\.(\d+)", None)]}


def mae_group_matcher(coarse: bool = False) -> dict:
    return MAE_LAYERS


def build_classifier(encoder: Any, num_classes: int, spec: FinetuneSpec) -> nn.Module:
    """A trainable copy of ``encoder.vit`` with drop path and a fresh linear head (MAE's init)."""
    from timm.layers import DropPath, trunc_normal_

    vit = copy.deepcopy(encoder.vit).train().requires_grad_(True)
    # timm's stochastic-depth rule (VisionTransformer(drop_path_rate=...)): rate grows linearly with depth
    rates = torch.linspace(0, spec.drop_path, len(vit.blocks)).tolist()
    for block, rate in zip(vit.blocks, rates, strict=True):
        block.drop_path1 = DropPath(rate) if rate > 0 else nn.Identity()
        block.drop_path2 = DropPath(rate) if rate > 0 else nn.Identity()
    pool = spec.pool_for(encoder.has_class_token)
    vit.reset_classifier(num_classes, global_pool="token" if pool == "cls" else "avg")
    if spec.head_norm == "fc_norm":
        eps = getattr(vit.norm, "eps", 1e-6)
        vit.fc_norm = nn.LayerNorm(vit.embed_dim, eps=eps)
        vit.norm = nn.Identity()
    vit.group_matcher = mae_group_matcher  # read by timm.optim's layer decay (build_optimizer)
    trunc_normal_(vit.head.weight, std=spec.head_init_std)
    nn.init.zeros_(vit.head.bias)
    return vit


def build_optimizer(model: nn.Module, spec: FinetuneSpec) -> torch.optim.Optimizer:
    """AdamW over timm's layer-decay groups with MAE's layer map (MAE_LAYERS): block i gets lr × decay^(depth - i),
    the stem decay^(depth + 1), norm and head 1, as MAE's ``param_groups_lrd``; no weight decay on 1-D
    parameters and ``model.no_weight_decay()`` (pos_embed, cls_token)."""
    from timm.optim import create_optimizer_v2

    return create_optimizer_v2(model, opt="adamw", lr=0.0, weight_decay=spec.weight_decay,
                               layer_decay=spec.layer_decay, betas=tuple(spec.betas))


def lr_at(epoch: float, spec: FinetuneSpec, lr: float, epochs: int) -> float:
    """MAE ``adjust_learning_rate``: linear warm-up from 0, then half-cycle cosine to ``min_lr``;
    ``epoch`` is fractional (step / steps per epoch + epoch)."""
    if epoch < spec.warmup_epochs:
        return lr * epoch / spec.warmup_epochs
    progress = (epoch - spec.warmup_epochs) / max(1e-12, epochs - spec.warmup_epochs)
    return spec.min_lr + (lr - spec.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def train_transform(spec: FinetuneSpec, img_size: int, *, normalize: bool = True):
    """timm's ImageNet training transform as MAE's ``build_transform(is_train=True)`` calls it. With
    ``normalize=False`` it is timm's prefetcher variant: it stops at uint8 and ``device_erasing`` does the
    random erasing on the device after normalisation (timm's PrefetchLoader split)."""
    from timm.data import create_transform
    from torchvision import transforms as T

    from ijepa_eval.data.transforms import IMAGENET_MEAN, IMAGENET_STD, to_rgb

    timm_tf = create_transform(
        input_size=img_size, is_training=True, scale=tuple(spec.crop_scale), hflip=spec.hflip, color_jitter=None,
        auto_augment=spec.auto_augment, interpolation="bicubic", re_prob=spec.reprob, re_mode=spec.remode,
        re_count=spec.recount, mean=IMAGENET_MEAN, std=IMAGENET_STD, use_prefetcher=not normalize,
    )
    return T.Compose([T.Lambda(to_rgb), timm_tf])


def device_erasing(spec: FinetuneSpec, device: torch.device):
    """MAE's random erasing (``--reprob/--remode/--recount``) on normalised batches on ``device``; None at 0."""
    from timm.data.random_erasing import RandomErasing

    if spec.reprob <= 0:
        return None
    return RandomErasing(probability=spec.reprob, mode=spec.remode, max_count=spec.recount, device=device)


def mixup_and_loss(spec: FinetuneSpec, num_classes: int) -> tuple[Any, nn.Module]:
    """(timm ``Mixup`` or None, criterion) exactly as MAE's main_finetune chooses them."""
    from timm.data import Mixup
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    if spec.mixup_active:  # smoothing goes into Mixup's soft targets
        mixup = Mixup(mixup_alpha=spec.mixup, cutmix_alpha=spec.cutmix, prob=spec.mixup_prob,
                      switch_prob=spec.mixup_switch_prob, mode=spec.mixup_mode, label_smoothing=spec.smoothing,
                      num_classes=num_classes)
        return mixup, SoftTargetCrossEntropy()
    if spec.smoothing > 0:
        return None, LabelSmoothingCrossEntropy(smoothing=spec.smoothing)
    return None, nn.CrossEntropyLoss()
