"""BEiT-style encoders (data2vec vision, CAE) on timm's ``Beit``: architecture from weights, build, fit.

BEiT-style blocks differ from timm's VisionTransformer in ways the weights show: q/v biases without a k
bias (``attn.q_bias``, ``attn.v_bias``), LayerScale named ``gamma_1``/``gamma_2``, and relative position
bias tables, shared (``rel_pos_bias.*``) or per block (``blocks.N.attn.relative_position_bias_table``),
whose second dimension is the number of heads. timm's Beit uses the same key names, so official
state dicts load after dropping ``relative_position_index`` buffers, which timm recomputes; each is
checked against timm's before it is dropped.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from functools import partial
from typing import Any

import torch

from ijepa_eval.encoders.arch import ARCH_HINT, HEADS_BY_WIDTH, ArchSpec
from ijepa_eval.errors import ArchitectureError, CheckpointError

BEIT_ROOTS = frozenset({"cls_token", "pos_embed", "patch_embed", "rel_pos_bias", "blocks", "norm", "fc_norm"})
# kwargs of ours that build_beit turns into Beit arguments
EXTRA_KWARGS = frozenset({"family", "norm_eps", "final_norm"})
SHARED_TABLE = "rel_pos_bias.relative_position_bias_table"


def is_beit_key(key: str) -> bool:
    return key.split(".", 1)[0] in BEIT_ROOTS


def is_beit_style(state_dict: Mapping[str, Any]) -> bool:
    """q/v biases or relative position tables: BEiT-style blocks, which timm's VisionTransformer cannot load."""
    return any(k.endswith(("attn.q_bias", "relative_position_bias_table")) for k in state_dict)


def _window_of(table: torch.Tensor) -> int:
    """Side of the patch grid a relative position table was made for: rows = (2W - 1)^2 + 3."""
    side = (math.isqrt(int(table.shape[0]) - 3) + 1) // 2
    if (2 * side - 1) ** 2 + 3 != table.shape[0]:
        raise ArchitectureError(f"relative position table with {table.shape[0]} rows fits no square patch grid")
    return side


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

    return (set(inspect.signature(Beit.__init__).parameters) - {"self"}) | EXTRA_KWARGS


def build_beit(arch: Mapping[str, Any], img_size: int | None = None):
    """An empty timm Beit without head; ``final_norm: False`` removes its final norm (no norm in the weights)."""
    from timm.layers import LayerNorm
    from timm.models.beit import Beit

    kwargs = {k: v for k, v in arch.items() if k not in EXTRA_KWARGS}
    if img_size:
        kwargs["img_size"] = img_size
    final_norm = arch.get("final_norm", True)
    try:
        model = Beit(**kwargs, num_classes=0, global_pool="", norm_layer=partial(LayerNorm, eps=arch.get("norm_eps", 1e-6)))
    except (TypeError, ValueError, AssertionError) as err:
        raise ArchitectureError(f"cannot build a Beit from arch {dict(arch)} ({err}); {ARCH_HINT}") from err
    if final_norm is False:  # as timm's prune_intermediate_layers does
        model.norm, model.fc_norm = torch.nn.Identity(), torch.nn.Identity()
    return model


def fit_beit_state_dict(state_dict: dict[str, torch.Tensor], model) -> dict[str, torch.Tensor]:
    """Resize pos_embed and relative position tables to the model's grid (timm's own Beit filter)."""
    from timm.models.beit import checkpoint_filter_fn

    return checkpoint_filter_fn(state_dict, model)


def beit_arch_of(model) -> dict[str, Any]:
    """The kwargs of a built timm Beit, in infer_beit_arch's terms (what results record as its arch)."""
    from ijepa_eval.encoders.encoder import final_norm_of

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
