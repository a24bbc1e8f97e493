"""End-to-end fine-tuning (``probe: finetune`` recipes, ``ijepa-eval finetune``): the paper's Table 2
rows that were adapted by fine-tuning (I-JEPA's own, App. A.2: ``in1k_1pct_finetune``; MAE's, Semi-ViT's
recipe: ``in1k_1pct_finetune_semivit``), built from timm's parts.

    from ijepa_eval.finetune import run_finetune
    path = run_finetune("in1k_1pct_finetune_semivit", "mae_pretrain_vit_huge.pth", root="/data/imagenet")
"""

from __future__ import annotations

from ijepa_eval.lazy import lazy_exports

# lazy: recipes import the config for every `ijepa-eval --help`, which must not import torch
_EXPORTS = {"FinetuneSpec": "config", "run_finetune": "run", "build_classifier": "model"}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
