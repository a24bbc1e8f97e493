"""I-JEPA pretraining core: multi-block masks, context/target encoders + predictor, the training loop,
named configs, and checkpoints in the official format (which ``load_encoder`` reads).

    from ijepa_eval.pretrain import MaskCollator, get_config, apply_overrides, train
    train(apply_overrides(get_config("tiny_cpu"), ["steps=100"]), "runs/tiny")

Exports resolve lazily so that ``ijepa-eval --help`` does not import torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "MaskCollator": "ijepa_eval.pretrain.masks",
    "PretrainConfig": "ijepa_eval.pretrain.configs",
    "CONFIGS": "ijepa_eval.pretrain.configs",
    "get_config": "ijepa_eval.pretrain.configs",
    "apply_overrides": "ijepa_eval.pretrain.configs",
    "build_ijepa": "ijepa_eval.pretrain.model",
    "train": "ijepa_eval.pretrain.train",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ijepa_eval.pretrain' has no attribute '{name}'")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
