"""DINOv2 in timm's layout: official hub releases (facebookresearch/dinov2 ``*_pretrain.pth``) and the fold
of register models shared with the ``transformers`` reader.

DINOv2 adds the cls slot of ``pos_embed`` to the cls token and gives register tokens no position, so a
register model becomes timm's ``no_embed_class`` layout (what timm's ``vit_*_reg4_dinov2`` use) by folding
``pos_embed[:, 0]`` into ``cls_token``: the sum is the same. DINOv2 evaluates at 224 px (resize 256, crop
224) with weights trained at 518, resampling the patch grid of ``pos_embed`` bicubically
(``dinov2/hub/backbones.py``): the original models without antialiasing and with the scale factor
shifted by ``interpolate_offset`` 0.1, register models with antialiasing to the exact grid.
``transformers`` resamples to the exact grid always (antialiased only with registers); its folders
follow it, so each layout gives its own code's features.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ijepa_eval.encoders.formats.base import Converted, is_tensor_dict, no_branch

EVAL_IMG_SIZE = 224
OFFICIAL_OFFSET = 0.1  # DinoVisionTransformer interpolate_offset of the original (register-free) releases
SWIGLU = {"mlp_layer": "swiglu_packed", "act_layer": "silu"}  # packed w12 -> fc1 = [x1; x2], silu(x1) * x2


def fold_registers(state_dict: dict[str, torch.Tensor], registers: torch.Tensor) -> None:
    """In place: registers -> ``reg_token``, cls position folded into ``cls_token``, ``pos_embed`` patches only."""
    pos = state_dict["pos_embed"]
    state_dict["reg_token"] = registers
    state_dict["cls_token"] = state_dict["cls_token"] + pos[:, :1]
    state_dict["pos_embed"] = pos[:, 1:]


def family_arch(swiglu: bool) -> dict[str, Any]:
    """What the weights cannot tell: SwiGLU's activation, and the resolution DINOv2's own eval uses."""
    return {"img_size": EVAL_IMG_SIZE, **(SWIGLU if swiglu else {})}


def resample(registers: bool, offset: float = 0.0) -> dict[str, Any]:
    """pos_embed resampling that matches DINOv2's own interpolation (``offset`` 0.1: original releases),
    as options for the build stage's resampling."""
    return {"antialias": registers, **({"offset": offset} if offset else {})}


def detect(obj: Any) -> bool:
    """An official release: plain tensors with DINOv2's ``mask_token`` and LayerScale gammas."""
    return (
        is_tensor_dict(obj) and "mask_token" in obj and "blocks.0.ls1.gamma" in obj and "patch_embed.proj.weight" in obj
    )


def convert(obj: Mapping[str, torch.Tensor], branch: str | None) -> Converted:
    """Official names are timm's but for ``register_tokens`` and SwiGLU's ``w12``/``w3``; ``mask_token`` is dropped."""
    no_branch(branch, "DINOv2 release")
    state_dict = {k: v for k, v in obj.items() if k not in ("mask_token", "register_tokens")}
    if "register_tokens" in obj:
        fold_registers(state_dict, obj["register_tokens"])
    swiglu = any(".mlp.w12." in k for k in state_dict)
    state_dict = {k.replace(".mlp.w12.", ".mlp.fc1.").replace(".mlp.w3.", ".mlp.fc2."): v for k, v in state_dict.items()}
    registers = "register_tokens" in obj  # hub *_reg models: interpolate_antialias True, interpolate_offset 0
    return Converted(state_dict, dropped_keys=["mask_token"], arch=family_arch(swiglu),
                     resample=resample(registers, offset=0.0 if registers else OFFICIAL_OFFSET))
