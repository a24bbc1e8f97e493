"""Pretraining configuration: one dataclass, named presets for the paper's runs, typed ``key=value`` overrides.

The presets copy the official ``configs/*.yaml`` (facebookresearch/ijepa): ``batch_size`` is per process
as in the official code (global batch 2048 = 128 x 16 GPUs for ViT-H/14). ``vitb16_in1k`` and
``vitl16_in1k`` have no official yaml; they follow the paper (600 epochs, predictor depth 6 / 12).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, fields, replace
from typing import Any

from ijepa_eval.errors import ConfigError, unknown_choice
from ijepa_eval.pretrain.masks import STRATEGIES
from ijepa_eval.pretrain.model import VIT_SIZES
from ijepa_eval.validate import check_ranges

DATASET_CLEVR_MINI = "clevr_mini"


# Value limits (ijepa_eval.validate), checked before any data is rendered or a step is taken.
PRETRAIN_RANGES = {
    "embed_dim": ">=0", "depth": ">=0", "num_heads": ">=0", "patch_size": ">=1", "crop_size": ">=1",
    "pred_depth": ">=1", "pred_emb_dim": ">=1", "num_workers": ">=0", "crop_scale": "each>0",
    "clevr_mini_images": ">=1", "clevr_mini_size": ">=8", "enc_mask_scale": "each>0", "pred_mask_scale": "each>0",
    "aspect_ratio": "each>0", "num_enc_masks": ">=1", "num_pred_masks": ">=1", "min_keep": ">=1", "epochs": ">=1",
    "steps": ">=0", "stop_at": ">=0", "ipe_scale": ">0", "warmup": ">=0", "start_lr": ">=0", "lr": ">0",
    "final_lr": ">=0", "weight_decay": ">=0", "final_weight_decay": ">=0", "ema": "each>=0", "seed": ">=0",
    "knn_every": ">=0",
}


@dataclass(frozen=True)
class PretrainConfig:
    # -- model (encoder width from VIT_SIZES via `model_name`, unless embed_dim/depth/num_heads are set)
    model_name: str = "vit_huge"
    embed_dim: int = 0  # 0 = from model_name
    depth: int = 0
    num_heads: int = 0
    patch_size: int = 14
    crop_size: int = 224
    pred_depth: int = 12
    pred_emb_dim: int = 384
    # -- data: a get_dataset name (imagenet, folder, clevr_count, hf:<id>, ...) or "clevr_mini" (generated)
    dataset: str = "imagenet"
    root: str = ""  # "" = required for real datasets; clevr_mini renders under OUT/clevr_mini
    batch_size: int = 128  # per process
    num_workers: int = 10
    crop_scale: tuple[float, float] = (0.3, 1.0)
    clevr_mini_images: int = 2000
    clevr_mini_size: int = 96
    # -- masks (official names)
    mask_strategy: str = "multiblock"
    official_bias: bool = False
    allow_overlap: bool = False
    enc_mask_scale: tuple[float, float] = (0.85, 1.0)
    pred_mask_scale: tuple[float, float] = (0.15, 0.2)
    aspect_ratio: tuple[float, float] = (0.75, 1.5)
    num_enc_masks: int = 1
    num_pred_masks: int = 4
    min_keep: int = 10
    # -- optimisation (official names; warmup in epochs)
    epochs: int = 300
    steps: int = 0  # > 0: train this many steps instead of epochs * iterations-per-epoch (schedules follow)
    stop_at: int = 0  # > 0: stop (and checkpoint) after this global step, e.g. to train in chunks
    ipe_scale: float = 1.0
    warmup: float = 40
    start_lr: float = 0.0002
    lr: float = 0.001
    final_lr: float = 1.0e-06
    weight_decay: float = 0.04
    final_weight_decay: float = 0.4
    ema: tuple[float, float] = (0.996, 1.0)
    loss: str = "smooth_l1"
    grad_accum: int = 1
    bf16: bool = True  # autocast on CUDA only
    compile: bool = False
    seed: int = 0
    # -- logging / checkpoints
    save_every: int = 1000  # steps
    log_every: int = 10
    collapse_every: int = 50  # steps between target-feature std / effective-rank checks
    collapse_std_floor: float = 0.05  # layer-normed target tokens: ~0.2-0.3 healthy, 0 collapsed
    collapse_rank_floor: float = 2.0
    knn_every: int = 0  # steps; 0 = off (needs a labelled dataset and the probes room)
    knn_dataset: str = ""  # "" = clevr_count on the generated CLEVR-mini

    def resolved_arch(self) -> dict[str, Any]:
        """Encoder kwargs after filling zeros from ``model_name``."""
        if self.model_name not in VIT_SIZES:
            raise ConfigError(unknown_choice("model_name", self.model_name, VIT_SIZES))
        base = dict(VIT_SIZES[self.model_name])
        for key in ("embed_dim", "depth", "num_heads"):
            if getattr(self, key):
                base[key] = getattr(self, key)
        base.setdefault("mlp_ratio", 4.0)
        return {"img_size": self.crop_size, "patch_size": self.patch_size, **base}

    def validate(self) -> PretrainConfig:
        check_ranges(self, PRETRAIN_RANGES, "pretraining config")
        if self.mask_strategy not in STRATEGIES:
            raise ConfigError(unknown_choice("mask_strategy", self.mask_strategy, STRATEGIES))
        if self.loss not in ("smooth_l1", "l2"):
            raise ConfigError(unknown_choice("loss", self.loss, ("smooth_l1", "l2")))
        arch = self.resolved_arch()
        if self.crop_size % self.patch_size:
            raise ConfigError(f"crop_size {self.crop_size} is not a multiple of patch_size {self.patch_size}")
        for dim, heads, what in ((arch["embed_dim"], arch["num_heads"], "embed_dim"),
                                 (self.pred_emb_dim, arch["num_heads"], "pred_emb_dim")):  # fmt: skip
            if dim % heads or dim % 4:
                raise ConfigError(f"{what} {dim} must be divisible by num_heads {heads} and by 4")
        for key in ("batch_size", "grad_accum", "log_every", "save_every", "collapse_every"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.batch_size % self.grad_accum:
            raise ConfigError(
                f"batch_size {self.batch_size} must be divisible by grad_accum {self.grad_accum}"
            )
        return self


_VIT_H = dict(model_name="vit_huge", pred_depth=12)
CONFIGS: dict[str, PretrainConfig] = {
    # configs/in1k_vith14_ep300.yaml (16 x 128 = 2048)
    "vith14_in1k": PretrainConfig(**_VIT_H, patch_size=14, batch_size=128),
    # configs/in1k_vith16-448_ep300.yaml (128 x 16 = 2048)
    "vith16_448_in1k": PretrainConfig(**_VIT_H, patch_size=16, crop_size=448, batch_size=16),
    # configs/in22k_vith14_ep66.yaml (ImageNet-22k: point `dataset=folder root=...` at your copy)
    "vith14_in22k": PretrainConfig(
        **_VIT_H, patch_size=14, batch_size=32, epochs=66, warmup=3, dataset="folder"
    ),
    # configs/in22k_vitg16_ep44.yaml
    "vitg16_in22k": PretrainConfig(
        model_name="vit_giant",
        pred_depth=16,
        patch_size=16,
        batch_size=16,
        epochs=44,
        warmup=3,
        dataset="folder",
    ),
    # paper Table 1 (no official yaml): ViT-B/16 and ViT-L/16, 600 epochs, global batch 2048
    "vitb16_in1k": PretrainConfig(model_name="vit_base", pred_depth=6, patch_size=16, epochs=600),
    "vitl16_in1k": PretrainConfig(model_name="vit_large", pred_depth=12, patch_size=16, epochs=600),
    # a few minutes on 2 CPU cores: small ViT on generated CLEVR-mini (64 px, 8 x 8 patches of 8 px)
    "tiny_cpu": PretrainConfig(
        model_name="vit_tiny",
        depth=4,
        patch_size=8,
        crop_size=64,
        pred_depth=2,
        pred_emb_dim=96,
        dataset=DATASET_CLEVR_MINI,
        clevr_mini_images=1000,
        clevr_mini_size=64,
        batch_size=32,
        num_workers=0,
        crop_scale=(0.5, 1.0),
        min_keep=4,
        epochs=1,
        steps=600,
        warmup=0.05,  # fraction of `epochs`, i.e. 5% of the steps
        start_lr=1e-4,
        lr=2.5e-4,  # higher lr (or EMA < 0.996) drifts towards image-independent targets here
        final_lr=1e-5,
        save_every=200,
        log_every=10,
        collapse_every=25,
    ),
}


def get_config(name: str) -> PretrainConfig:
    if name not in CONFIGS:
        raise ConfigError(unknown_choice("pretraining config", name, CONFIGS))
    return CONFIGS[name]


def _parse_value(key: str, text: str, annotation: Any) -> Any:
    """Turn the text of ``key=value`` into the field's type, or raise a one-line ConfigError."""
    bad = ConfigError(f"override {key}={text!r}: expected {annotation}; fix the value")
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        raise bad  # no optional fields in this config
    if annotation is bool:
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise bad
    if origin is tuple:
        parts = [p for p in text.replace("(", "").replace(")", "").split(",") if p.strip()]
        item_types = typing.get_args(annotation)
        if len(parts) != len(item_types):
            raise bad
        return tuple(_parse_value(key, p.strip(), t) for p, t in zip(parts, item_types, strict=True))
    try:
        if annotation is int:
            return int(text)
        if annotation is float:
            return float(text)
    except ValueError:
        raise bad from None
    return text


def apply_overrides(config: PretrainConfig, overrides: list[str] | dict[str, Any]) -> PretrainConfig:
    """``["lr=5e-4", "crop_scale=0.3,1.0"]`` or a dict -> a new, validated config.

    Unknown keys and values of the wrong type raise ConfigError.
    """
    hints = typing.get_type_hints(PretrainConfig)
    names = [f.name for f in fields(PretrainConfig)]
    items = overrides.items() if isinstance(overrides, dict) else [_split(o) for o in overrides]
    changes = {}
    for key, value in items:
        if key not in hints:
            raise ConfigError(unknown_choice("config key", key, names))
        if isinstance(value, str):
            value = _parse_value(key, value, hints[key])
        elif not _matches(value, hints[key]):
            raise ConfigError(f"override {key}={value!r}: expected {hints[key]}; fix the value")
        changes[key] = value
    return replace(config, **changes).validate()


def _split(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"override '{item}' is not key=value (e.g. lr=5e-4)")
    return key.strip(), value.strip()


def _matches(value: Any, annotation: Any) -> bool:
    if typing.get_origin(annotation) is tuple:
        args = typing.get_args(annotation)
        return isinstance(value, (tuple, list)) and len(value) == len(args)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, annotation)


def config_to_dict(config: PretrainConfig) -> dict[str, Any]:
    """Plain types only (tuples become lists), so checkpoints load with ``weights_only=True``."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}


def config_from_dict(data: dict[str, Any]) -> PretrainConfig:
    """Inverse of ``config_to_dict``; unknown keys (from a newer version) raise ConfigError."""
    return apply_overrides(
        PretrainConfig(), {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    )
