"""What the ViT and BEiT specs share: the spec record, heads per standard width, where the final norm sits.

Weights fix almost everything (width, depth, patch, grid, prefix tokens, MLP ratio, biases); the number of
attention heads leaves no trace in a ViT's weights, so it comes from the standard width table, from what
the format records, or from ``arch``.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import nn

from ijepa_eval.errors import ArchitectureError

# Standard ViT widths -> heads (Ti, S, M, B, L, H, g (I-JEPA / EVA), g (DINOv2)); head dim is 64 or 88/96.
HEADS_BY_WIDTH = {192: 3, 384: 6, 512: 8, 768: 12, 1024: 16, 1280: 16, 1408: 16, 1536: 24}
ARCH_HINT = "pass arch= (--arch) as a timm model name (e.g. vit_base_patch16_224) or a dict/JSON of ViT kwargs"
FinalNorm = Literal["tokens", "pooled", "none"]  # where the final norm sits: see encoder.py


@dataclass
class ArchSpec:
    """ViT kwargs read from weights; ``unknown`` names the kwargs the weights cannot tell."""

    kwargs: dict[str, Any]
    unknown: list[str] = field(default_factory=list)

    def require_complete(self) -> dict[str, Any]:
        if self.unknown:
            width = self.kwargs.get("embed_dim")
            raise ArchitectureError(
                f"cannot infer {', '.join(self.unknown)} for a ViT of width {width} (not a standard width: "
                f"{', '.join(map(str, sorted(HEADS_BY_WIDTH)))}); {ARCH_HINT}, e.g. {{\"num_heads\": 8}}"
            )
        return dict(self.kwargs)


def with_hints(spec: ArchSpec, hints: Mapping[str, Any]) -> ArchSpec:
    """Complete what weights cannot tell with what the format itself records (heads in its args, ...)."""
    return ArchSpec({**spec.kwargs, **hints}, [k for k in spec.unknown if hints.get(k) is None])


def final_norm_of_arch(kwargs: Mapping[str, Any]) -> FinalNorm:
    """"tokens" | "pooled" | "none" (see encoder.py) from ViT or Beit kwargs, without building the model."""
    if kwargs.get("final_norm") is False:
        return "none"
    return "pooled" if kwargs.get("fc_norm") or kwargs.get("use_fc_norm") else "tokens"


def _is_norm(module: nn.Module | None) -> bool:
    return module is not None and not isinstance(module, nn.Identity)


def final_norm_of(model: nn.Module) -> FinalNorm:
    """Where a built timm model normalises: on tokens (``norm``), after pooling (``fc_norm``) or nowhere."""
    if _is_norm(getattr(model, "norm", None)):
        if _is_norm(getattr(model, "fc_norm", None)):
            raise ArchitectureError("this model has both a token norm and an fc_norm; build it with only one")
        return "tokens"
    return "pooled" if _is_norm(getattr(model, "fc_norm", None)) else "none"


def unused_keys(state_dict: Mapping[str, Any], arch: Mapping[str, Any] | str) -> list[str]:
    """Checkpoint keys the chosen architecture leaves out on purpose: the final norm when ``final_norm`` is
    False (MSN's evaluation path), so strict loading still catches every other mismatch."""
    if isinstance(arch, str) or arch.get("final_norm") is not False:
        return []
    return sorted(k for k in state_dict if k.split(".", 1)[0] in ("norm", "fc_norm"))


def init_parameters(model_class: type, extra: frozenset[str]) -> set[str]:
    """The kwargs ``arch`` may set: the timm class's constructor arguments plus our JSON-friendly extras."""
    return (set(inspect.signature(model_class.__init__).parameters) - {"self"}) | extra
