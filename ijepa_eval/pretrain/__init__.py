"""I-JEPA pretraining core: multi-block masks, context/target encoders + predictor, the training loop,
named configs, and checkpoints in the official format (which ``load_encoder`` reads).

    from ijepa_eval.pretrain import MaskCollator, get_config, apply_overrides, train
    train(apply_overrides(get_config("tiny_cpu"), ["steps=100"]), "runs/tiny")

Exports resolve lazily so that ``ijepa-eval --help`` does not import torch.
"""

from __future__ import annotations

from ijepa_eval.lazy import lazy_exports

_EXPORTS = {
    "MaskCollator": "masks",
    "PretrainConfig": "configs",
    "CONFIGS": "configs",
    "get_config": "configs",
    "apply_overrides": "configs",
    "build_ijepa": "model",
    "train": "loop",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
