"""End-to-end fine-tuning, the engine: classifier, optimizer and schedule from timm's parts (``model``) and a
deterministic, resumable DDP loop (``train``), configured by a recipe's ``finetune:`` section (``config``).
The paper's Table 2 rows that were adapted by fine-tuning (I-JEPA's own, App. A.2: ``in1k_1pct_finetune``;
MAE's, Semi-ViT's recipe: ``in1k_1pct_finetune_semivit``) run through it.

It knows nothing of recipes or result files: ``ijepa_eval.protocols.finetuning`` (``ijepa-eval finetune``,
``run_protocol`` on a ``probe: finetune`` recipe) drives it.

    from ijepa_eval.protocols import run_finetune
    path = run_finetune("in1k_1pct_finetune", "mae_pretrain_vit_huge.pth", root="/data/imagenet")
"""

from __future__ import annotations

from ijepa_eval.lazy import lazy_exports

# lazy: recipes import the config for every `ijepa-eval --help`, which must not import torch
_EXPORTS = {"FinetuneSpec": "config", "build_classifier": "model"}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
