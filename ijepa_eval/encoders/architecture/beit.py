"""The BEiT spec: timm ``Beit`` kwargs read from BEiT-style weights (data2vec vision, CAE, BEiT), and read
back from a built model.

BEiT-style blocks differ from timm's VisionTransformer in ways the weights show: q/v biases without a k
bias (``attn.q_bias``, ``attn.v_bias``), LayerScale named ``gamma_1``/``gamma_2``, and relative position
bias tables, shared (``rel_pos_bias.*``) or per block (``blocks.N.attn.relative_position_bias_table``),
whose second dimension is the number of heads. timm's Beit uses the same key names.
"""

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

BEIT_ROOTS = frozenset({"cls_token", "pos_embed", "patch_embed", "rel_pos_bias", "blocks", "norm", "fc_norm"})
# kwargs of ours that the build stage turns into Beit arguments
EXTRA_KWARGS = frozenset({"family", "norm_eps", "final_norm"})
SHARED_TABLE = "rel_pos_bias.relative_position_bias_table"


def is_beit_key(key: str) -> bool:
    return key.split(".", 1)[0] in BEIT_ROOTS


def _window_of(table: torch.Tensor) -> int:
    """Side of the patch grid a relative position table was made for: rows = (2W - 1)^2 + 3."""
    side = (math.isqrt(int(table.shape[0]) - 3) + 1) // 2
    if (2 * side - 1) ** 2 + 3 != table.shape[0]:
        raise ArchitectureError(f"relative position table with {table.shape[0]} rows fits no square patch grid")
    return side


def infer_beit_arch(state_dict: Mapping[str, torch.Tensor]) -> ArchSpec:
    """Beit kwargs from BEiT-style weights in timm names (heads from a relative position table when any)."""
    patch_w = state_dict.get("patch_embed.proj.weight")
    if patch_w is None or patch_w.ndim != 4 or "blocks.0.attn.qkv.weight" not in state_dict:
        raise ArchitectureError(f"not a BEiT-style encoder (no patch_embed.proj.weight / blocks.0.attn.qkv); {ARCH_HINT}")
    dim, in_chans, patch = int(patch_w.shape[0]), int(patch_w.shape[1]), int(patch_w.shape[-1])
    depth = 1 + max(int(k.split(".")[1]) for k in state_dict if k.startswith("blocks."))
    table = state_dict.get(SHARED_TABLE, state_dict.get("blocks.0.attn.relative_position_bias_table"))
    kwargs: dict[str, Any] = dict(
        family="beit", embed_dim=dim, depth=depth, patch_size=patch, in_chans=in_chans,
        num_heads=int(table.shape[1]) if table is not None else HEADS_BY_WIDTH.get(dim),
        mlp_ratio=int(state_dict["blocks.0.mlp.fc1.weight"].shape[0]) / dim,
        qkv_bias="blocks.0.attn.q_bias" in state_dict,
        init_values=0.1 if "blocks.0.gamma_1" in state_dict else None,  # any value: the gammas are loaded
        use_abs_pos_emb="pos_embed" in state_dict,
        use_rel_pos_bias="blocks.0.attn.relative_position_bias_table" in state_dict,
        use_shared_rel_pos_bias=SHARED_TABLE in state_dict,
        use_fc_norm="fc_norm.weight" in state_dict,
        norm_eps=1e-6,
    )
    if "norm.weight" not in state_dict and "fc_norm.weight" not in state_dict:
        kwargs["final_norm"] = False
    unknown = [] if kwargs["num_heads"] else ["num_heads"]
    if "pos_embed" in state_dict:
        side = math.isqrt(int(state_dict["pos_embed"].shape[1]) - 1)
    elif table is not None:
        side = _window_of(table)
    else:
        side = 224 // patch
        unknown.append("img_size")
    kwargs["img_size"] = side * patch
    return ArchSpec(kwargs, unknown)


def beit_parameters() -> set[str]:
    from timm.models.beit import Beit

    return init_parameters(Beit, EXTRA_KWARGS)


def beit_arch_of(model) -> dict[str, Any]:
    """The kwargs of a built timm Beit, in infer_beit_arch's terms (what results record as its arch)."""
    block, final_norm = model.blocks[0], final_norm_of(model)
    arch = dict(
        family="beit", embed_dim=int(model.embed_dim), depth=len(model.blocks),
        patch_size=int(model.patch_embed.patch_size[0]), in_chans=int(model.patch_embed.proj.in_channels),
        num_heads=int(block.attn.num_heads), mlp_ratio=block.mlp.fc1.out_features / model.embed_dim,
        qkv_bias=block.attn.q_bias is not None, init_values=0.1 if block.gamma_1 is not None else None,
        use_abs_pos_emb=model.pos_embed is not None,
        use_rel_pos_bias=block.attn.relative_position_bias_table is not None,
        use_shared_rel_pos_bias=model.rel_pos_bias is not None, use_fc_norm=final_norm == "pooled",
        norm_eps=float(block.norm1.eps), img_size=int(model.patch_embed.img_size[0]),
    )
    return arch | ({"final_norm": False} if final_norm == "none" else {})
