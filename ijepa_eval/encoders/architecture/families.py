"""The two architecture families (timm VisionTransformer, timm Beit) and what dispatches on them: which
keys a family's encoder holds and the spec they imply, the spec completed by the user's ``arch``, and a
built model's kwargs read back."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from ijepa_eval.encoders.architecture.base import ArchSpec
from ijepa_eval.encoders.architecture.beit import beit_arch_of, beit_parameters, infer_beit_arch, is_beit_key
from ijepa_eval.encoders.architecture.vit import infer_arch, is_encoder_key, vit_arch_of, vit_parameters
from ijepa_eval.errors import ArchitectureError


@dataclass(frozen=True)
class Family:
    is_key: Callable[[str], bool]  # an encoder key of this family (classifier heads, decoders are not)
    infer: Callable[[Mapping[str, torch.Tensor]], ArchSpec]
    parameters: Callable[[], set[str]]  # the kwargs ``arch`` may set
    label: str  # how errors name the kwargs
    timm_class: str


FAMILIES = {
    "vit": Family(is_encoder_key, infer_arch, vit_parameters, "ViT", "VisionTransformer"),
    "beit": Family(is_beit_key, infer_beit_arch, beit_parameters, "Beit", "Beit"),
}


def split_encoder(family: str, state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(the family's encoder keys, every other key, sorted): heads and decoders are not the encoder."""
    is_key = FAMILIES[family].is_key
    return {k: v for k, v in state_dict.items() if is_key(k)}, sorted(k for k in state_dict if not is_key(k))


def resolve_arch(spec: ArchSpec, arch: str | Mapping[str, Any] | None) -> dict[str, Any] | str:
    """Inferred kwargs completed by ``arch``: a dict overrides single kwargs (the user's value always wins
    over inferred ones and format defaults), a string names a timm model."""
    if arch is None:
        return spec.require_complete()
    if isinstance(arch, str):
        return arch
    if not isinstance(arch, Mapping):
        raise ArchitectureError(f"arch must be a timm model name or a dict of ViT kwargs, not {type(arch).__name__}")
    family = FAMILIES[spec.kwargs.get("family", "vit")]
    bad = sorted(set(arch) - family.parameters())
    if bad:
        raise ArchitectureError(f"unknown {family.label} kwargs in arch: {', '.join(bad)}; see timm {family.timm_class}")
    return {**spec.kwargs, **arch}


def arch_of(model) -> dict[str, Any]:
    """The kwargs of a built timm VisionTransformer, or Beit's kwargs for a timm Beit (what results record)."""
    return vit_arch_of(model) if hasattr(model, "has_class_token") else beit_arch_of(model)
