"""The ViT spec: timm VisionTransformer kwargs read from a timm-named encoder state dict, and read back
from a built model (what results record as its arch)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from ijepa_eval.encoders.architecture.base import (
    ARCH_HINT,
    HEADS_BY_WIDTH,
    ArchSpec,
    final_norm_of,
    init_parameters,
)
from ijepa_eval.errors import ArchitectureError

# JSON-friendly arch entries beyond VisionTransformer's own kwargs, translated by the build stage.
EXTRA_KWARGS = frozenset({"norm_eps"})
# Top-level key names that belong to a timm VisionTransformer encoder (classifier head excluded). fc_norm is
# the final norm of models that pool first (MAE fine-tuned with global_pool): no ``norm`` then.
ENCODER_ROOTS = frozenset({"cls_token", "reg_token", "pos_embed", "patch_embed", "norm_pre", "blocks", "norm",
                           "fc_norm"})


def is_encoder_key(key: str) -> bool:
    return key.split(".", 1)[0] in ENCODER_ROOTS


def _square_side(n: int) -> int | None:
    side = math.isqrt(n) if n > 0 else 0
    return side if side > 0 and side * side == n else None


def infer_arch(state_dict: Mapping[str, torch.Tensor]) -> ArchSpec:
    """Read ViT kwargs from a timm-named encoder state dict (heads: see ``base``)."""
    patch_w = state_dict.get("patch_embed.proj.weight")
    if patch_w is None or patch_w.ndim != 4:
        sample = ", ".join(sorted(state_dict)[:6])
        raise ArchitectureError(
            f"no 4-D 'patch_embed.proj.weight' among the encoder keys ({sample}, ...): not a ViT encoder "
            f"with timm names; {ARCH_HINT}"
        )
    embed_dim, in_chans, patch_h, patch_w_ = patch_w.shape
    if patch_h != patch_w_:
        raise ArchitectureError(f"non-square patches {patch_h}x{patch_w_} are not supported")
    block_ids = {int(k.split(".")[1]) for k in state_dict if k.startswith("blocks.") and k.split(".")[1].isdigit()}
    if not block_ids:
        raise ArchitectureError("no 'blocks.N.*' keys: not a ViT encoder state dict")
    depth = max(block_ids) + 1
    class_token = "cls_token" in state_dict
    reg_tokens = int(state_dict["reg_token"].shape[1]) if "reg_token" in state_dict else 0
    num_prefix = int(class_token) + reg_tokens

    kwargs: dict[str, Any] = dict(
        embed_dim=int(embed_dim), depth=depth, num_heads=HEADS_BY_WIDTH.get(int(embed_dim)),
        patch_size=int(patch_h), in_chans=int(in_chans), class_token=class_token, reg_tokens=reg_tokens,
    )
    unknown = [] if kwargs["num_heads"] else ["num_heads"]

    pos = state_dict.get("pos_embed")
    if pos is None:
        kwargs.update(pos_embed="none", img_size=224, no_embed_class=False)
        unknown.append("img_size")
    else:
        length = int(pos.shape[1])
        if (side := _square_side(length - num_prefix)) is not None:
            no_embed_class = False  # pos_embed has a slot per prefix token (MAE, DINO, original ViT)
        elif num_prefix and (side := _square_side(length)) is not None:
            no_embed_class = True  # prefix tokens carry no position (DeiT-3, DINOv2 with registers)
        else:
            raise ArchitectureError(
                f"pos_embed has {length} positions, which is no square grid plus {num_prefix} prefix tokens"
            )
        kwargs.update(img_size=side * int(patch_h), no_embed_class=no_embed_class)

    hidden = state_dict.get("blocks.0.mlp.fc1.weight")
    if hidden is None:
        raise ArchitectureError("no 'blocks.0.mlp.fc1.weight': unsupported block type; " + ARCH_HINT)
    kwargs["mlp_ratio"] = int(hidden.shape[0]) / int(embed_dim)
    fc2 = state_dict.get("blocks.0.mlp.fc2.weight")
    if fc2 is not None and 2 * int(fc2.shape[1]) == int(hidden.shape[0]):  # packed gated MLP: fc1 holds both halves
        kwargs.update(mlp_layer="swiglu_packed", act_layer="silu")
    kwargs["qkv_bias"] = "blocks.0.attn.qkv.bias" in state_dict
    kwargs["qk_norm"] = "blocks.0.attn.q_norm.weight" in state_dict
    # Any value enables LayerScale; the loaded gammas replace it.
    kwargs["init_values"] = 1.0 if "blocks.0.ls1.gamma" in state_dict else None
    if "fc_norm.weight" in state_dict and "norm.weight" not in state_dict:
        kwargs["fc_norm"] = True  # pool, then normalise (timm: norm = Identity)
    return ArchSpec(kwargs, unknown)


def vit_parameters() -> set[str]:
    from timm.models.vision_transformer import VisionTransformer

    return init_parameters(VisionTransformer, EXTRA_KWARGS)


def vit_arch_of(vit) -> dict[str, Any]:
    """The ViT kwargs of a built timm VisionTransformer."""
    block = vit.blocks[0]
    return dict(
        embed_dim=int(vit.embed_dim), depth=len(vit.blocks), num_heads=int(block.attn.num_heads),
        patch_size=int(vit.patch_embed.patch_size[0]), in_chans=int(vit.patch_embed.proj.in_channels),
        img_size=int(vit.patch_embed.img_size[0]), class_token=bool(vit.has_class_token),
        reg_tokens=int(vit.num_reg_tokens), no_embed_class=bool(vit.no_embed_class),
        mlp_ratio=block.mlp.fc1.out_features / vit.embed_dim, qkv_bias=block.attn.qkv.bias is not None,
        qk_norm=not isinstance(block.attn.q_norm, torch.nn.Identity),
        init_values=1.0 if not isinstance(block.ls1, torch.nn.Identity) else None,
    ) | _final_norm_kwargs(vit)


def _final_norm_kwargs(vit) -> dict[str, bool]:
    """Recorded only when not the default (norm on tokens), so existing arch records and cache keys hold."""
    return {"tokens": {}, "pooled": {"fc_norm": True}, "none": {"final_norm": False}}[final_norm_of(vit)]
