"""Protocols: versioned YAML recipes (top-level ``protocols/``) run on a checkpoint into result JSONs.

    from ijepa_eval.protocols import run_protocol
    path = run_protocol("cifar100", "IN1K-vit.h.14-300e.pth.tar", root="/data/cifar100")
"""

from ijepa_eval.protocols.recipes import RECIPES_DIR, Recipe, available_recipes, load_recipe, parse_overrides
from ijepa_eval.protocols.runner import run_protocol

__all__ = ["RECIPES_DIR", "Recipe", "available_recipes", "load_recipe", "parse_overrides", "run_protocol"]
