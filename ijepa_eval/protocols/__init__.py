"""Protocols: versioned YAML recipes (top-level ``protocols/``) run on a checkpoint into result JSONs.

    from ijepa_eval.protocols import run_protocol
    path = run_protocol("cifar100", "IN1K-vit.h.14-300e.pth.tar", root="/data/cifar100")

``run_protocol`` runs frozen-probe recipes itself (``runner``) and hands ``probe: finetune`` recipes to
``run_finetune`` (``finetuning``, built on the ``ijepa_eval.finetune`` engine).
"""

from __future__ import annotations

from ijepa_eval.lazy import lazy_exports

# name -> defining module; imported on first use so `ijepa-eval --help` does not import torch
_EXPORTS = {
    "RECIPES_DIR": "recipes",
    "Recipe": "recipes",
    "available_recipes": "recipes",
    "load_recipe": "recipes",
    "parse_overrides": "recipes",
    "run_finetune": "finetuning",
    "run_protocol": "runner",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
