"""Weights already in timm's names: plain state dicts (a bare I-JEPA encoder, DINO backbone releases,
re-saved timm models, ``.safetensors``) and timm's hub folders (``save_for_hf``, ``hf-hub:timm/<model>``:
``config.json`` with ``architecture`` and ``pretrained_cfg``).

timm's I-JEPA weights (``checkpoint_filter_fn``) read the official checkpoint's ``encoder``, the context
encoder, not the EMA ``target_encoder`` the paper evaluates; the tag tells them (``branch: context``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ijepa_eval.encoders.formats import dinov2
from ijepa_eval.encoders.formats.base import (
    Converted,
    drop_position_indices,
    is_beit_style,
    is_tensor_dict,
    no_branch,
    split_backbone,
)
from ijepa_eval.encoders.read import HFFolder
from ijepa_eval.errors import CheckpointError


def detect_state_dict(obj: Any) -> bool:
    return is_tensor_dict(obj) and any(k.endswith("patch_embed.proj.weight") for k in obj) and not dinov2.detect(obj)


def convert_state_dict(obj: Mapping[str, torch.Tensor], branch: str | None) -> Converted:
    no_branch(branch, "plain state dict")
    state_dict, dropped = split_backbone(obj)
    if is_beit_style(state_dict):  # a timm Beit state dict (data2vec/CAE/BEiT encoders re-saved)
        return Converted(drop_position_indices(state_dict), dropped_keys=dropped, family="beit")
    return Converted(state_dict, dropped_keys=dropped)


def context_branch(tag: str | None) -> str | None:
    """"context" for timm's I-JEPA weights (tags ``in1k_ijepa``, ``in22k_ijepa``), else None."""
    return "context" if tag and tag.endswith("_ijepa") else None


def detect_hub(obj: Any) -> bool:
    return isinstance(obj, HFFolder) and "architecture" in obj.config and "model_type" not in obj.config


def convert_hub(obj: HFFolder, branch: str | None) -> Converted:
    """timm's hub layout: weights already in timm names; the tag tells timm's I-JEPA (context) weights."""
    tag = (obj.config.get("pretrained_cfg") or {}).get("tag")
    context = context_branch(tag)
    if branch not in (None, context):
        raise CheckpointError(f"'{obj.path}' (timm {obj.config['architecture']}.{tag}) holds one network "
                              f"({context or 'no branches'}); drop --branch/branch='{branch}'")
    state_dict, dropped = split_backbone(obj.state_dict)
    meta = {"architecture": obj.config["architecture"], "pretrained_tag": tag, "folder": str(obj.path)}
    return Converted(state_dict, context, [context] if context else [], dropped, meta)
