"""What every format module builds on: the ``Converted`` result, the ``Format`` record, and the small
helpers several layouts share (prefixes, branches, metadata, BEiT-style keys).

Format modules import this module and the read stage (``HFFolder``); one whose layout is another
family's in other clothes imports that family's module (transformers' DINOv2 folders use ``dinov2``'s
facts). None imports the registry (``encoders/registry.py``), which lists them all: a helper two formats
need moves down here, never up into the registry.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from ijepa_eval.errors import CheckpointError, unknown_choice


@dataclass
class Converted:
    """One network's weights (timm names, prefixes removed) and what the format knows around them."""

    state_dict: dict[str, torch.Tensor]
    branch: str | None = None
    branches: list[str] = field(default_factory=list)
    dropped_keys: list[str] = field(default_factory=list)  # keys of other networks (predictor, decoder, head)
    meta: dict[str, Any] = field(default_factory=dict)
    family: str = "vit"  # "vit" (timm VisionTransformer) | "beit" (timm Beit: data2vec, CAE, BEiT)
    arch: dict[str, Any] = field(default_factory=dict)  # kwargs the format records (heads, norms, eval size)
    notes: list[str] = field(default_factory=list)  # what the features mean for this format, for `inspect`
    resample: dict[str, Any] = field(default_factory=dict)  # the family's pos_embed interpolation (timm options)


@dataclass(frozen=True)
class Format:
    name: str
    description: str
    detect: Callable[[Any], bool]
    convert: Callable[[Any, str | None], Converted]


def is_tensor_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def mapping_at(obj: Any, key: str) -> Mapping[str, Any] | None:
    """``obj[key]`` when ``obj`` is a dict holding a dict there (``{'model': state_dict}``), else None."""
    value = obj.get(key) if isinstance(obj, Mapping) else None
    return value if isinstance(value, Mapping) else None


def _jsonable(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_jsonable(v) for v in value)
    if isinstance(value, Mapping):
        return all(isinstance(k, str) and _jsonable(v) for k, v in value.items())
    return False


def scalar_meta(obj: Mapping[str, Any], skip: set[str]) -> dict[str, Any]:
    """Top-level entries worth showing: numbers, strings, argparse args, GradScaler states (no tensors)."""
    meta: dict[str, Any] = {}
    for key, value in obj.items():
        if key in skip:
            continue
        if isinstance(value, argparse.Namespace):
            meta[key] = {k: v if _jsonable(v) else repr(v) for k, v in vars(value).items()}
        elif _jsonable(value):
            meta[key] = value
    return meta


def strip_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Remove ``prefix`` when every key has it (DDP's ``module.``)."""
    if state_dict and all(k.startswith(prefix) for k in state_dict):
        return {k[len(prefix):]: v for k, v in state_dict.items()}
    return dict(state_dict)


def split_backbone(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """DINO/iBOT MultiCropWrapper dicts hold ``backbone.*`` and ``head.*``: keep the backbone."""
    state_dict = strip_prefix(state_dict, "module.")
    if not any(k.startswith("backbone.") for k in state_dict):
        return state_dict, []
    kept = {k[len("backbone."):]: v for k, v in state_dict.items() if k.startswith("backbone.")}
    return kept, sorted(k for k in state_dict if not k.startswith("backbone."))


def pick_branch(branch: str | None, branches: Mapping[str, str], default: str, fmt: str) -> str:
    branch = default if branch is None else branch
    if branch not in branches:
        raise CheckpointError(f"{fmt} checkpoint: " + unknown_choice("branch", branch, branches))
    return branch


def no_branch(branch: str | None, fmt: str) -> None:
    if branch is not None:
        raise CheckpointError(f"a {fmt} checkpoint holds one network; drop --branch/branch='{branch}'")


# -- BEiT-style weights (data2vec vision, CAE, BEiT): timm's Beit uses the same key names -----------------
def is_beit_style(state_dict: Mapping[str, Any]) -> bool:
    """q/v biases or relative position tables: BEiT-style blocks, which timm's VisionTransformer cannot load."""
    return any(k.endswith(("attn.q_bias", "relative_position_bias_table")) for k in state_dict)


def drop_position_indices(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove ``relative_position_index`` buffers after checking they are the index timm recomputes."""
    from timm.models.beit import gen_relative_position_index

    kept = {}
    for key, value in state_dict.items():
        if not key.endswith("relative_position_index"):
            kept[key] = value
            continue
        side = math.isqrt(int(value.shape[0]) - 1)
        if not torch.equal(value.long(), gen_relative_position_index((side, side))):
            raise CheckpointError(f"'{key}' is not the standard BEiT relative position index; re-save the model")
    return kept


def with_affine_free_fc_norm(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """data2vec's linear-probe ``fc_norm = LayerNorm(elementwise_affine=False)`` as the unit affine timm's
    Beit ``fc_norm`` computes the same with."""
    dim = state_dict["patch_embed.proj.weight"].shape[0]
    return {**state_dict, "fc_norm.weight": torch.ones(dim), "fc_norm.bias": torch.zeros(dim)}


def beit_final_norm(state_dict: Mapping[str, Any]) -> str:
    """Where BEiT-style weights normalise: "pooled" (``fc_norm`` after the mean), "tokens" (``norm``) or
    "none" (neither saved), as the architecture stage will infer it."""
    return "pooled" if "fc_norm.weight" in state_dict else "tokens" if "norm.weight" in state_dict else "none"
