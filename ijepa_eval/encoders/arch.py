"""ViT architecture from a timm-named encoder state dict, and the timm model built from it.

Weights fix almost everything (width, depth, patch, grid, prefix tokens, MLP ratio, biases); the number of
attention heads leaves no trace in them, so it comes from the standard width table or from ``arch``.
"""

from __future__ import annotations

import difflib
import inspect
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from ijepa_eval.errors import ArchitectureError

# Standard ViT widths -> heads (Ti, S, M, B, L, H, g (I-JEPA / EVA), g (DINOv2)); head dim is 64 or 88/96.
HEADS_BY_WIDTH = {192: 3, 384: 6, 512: 8, 768: 12, 1024: 16, 1280: 16, 1408: 16, 1536: 24}
ARCH_HINT = "pass arch= (--arch) as a timm model name (e.g. vit_base_patch16_224) or a dict/JSON of ViT kwargs"

# JSON-friendly arch entries beyond VisionTransformer's own kwargs, translated by ``vit_kwargs``.
EXTRA_KWARGS = frozenset({"norm_eps"})
MLP_LAYERS = ("swiglu_packed",)  # timm SwiGLUPacked: fc1 = [x1; x2] -> silu(x1) * x2 (DINOv2 giant)

# Top-level key names that belong to a timm VisionTransformer encoder (classifier head excluded). fc_norm is
# the final norm of models that pool first (MAE fine-tuned with global_pool): no ``norm`` then.
ENCODER_ROOTS = frozenset({"cls_token", "reg_token", "pos_embed", "patch_embed", "norm_pre", "blocks", "norm",
                           "fc_norm"})


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


def is_encoder_key(key: str) -> bool:
    return key.split(".", 1)[0] in ENCODER_ROOTS


def _square_side(n: int) -> int | None:
    side = math.isqrt(n) if n > 0 else 0
    return side if side > 0 and side * side == n else None


def infer_arch(state_dict: Mapping[str, torch.Tensor]) -> ArchSpec:
    """Read ViT kwargs from a timm-named encoder state dict (see module docstring)."""
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


def with_hints(spec: ArchSpec, hints: Mapping[str, Any]) -> ArchSpec:
    """Complete what weights cannot tell with what the format itself records (heads in its args, ...)."""
    return ArchSpec({**spec.kwargs, **hints}, [k for k in spec.unknown if hints.get(k) is None])


def final_norm_of_arch(kwargs: Mapping[str, Any]) -> str:
    """"tokens" | "pooled" | "none" (see encoder.py) from ViT or Beit kwargs, without building the model."""
    if kwargs.get("final_norm") is False:
        return "none"
    return "pooled" if kwargs.get("fc_norm") or kwargs.get("use_fc_norm") else "tokens"


def unused_keys(state_dict: Mapping[str, Any], arch: Mapping[str, Any] | str) -> list[str]:
    """Checkpoint keys the chosen architecture leaves out on purpose: the final norm when ``final_norm`` is
    False (MSN's evaluation path), so strict loading still catches every other mismatch."""
    if isinstance(arch, str) or arch.get("final_norm") is not False:
        return []
    return sorted(k for k in state_dict if k.split(".", 1)[0] in ("norm", "fc_norm"))


def _vit_parameters() -> set[str]:
    from timm.models.vision_transformer import VisionTransformer

    return (set(inspect.signature(VisionTransformer.__init__).parameters) - {"self"}) | EXTRA_KWARGS


def vit_kwargs(arch: Mapping[str, Any]) -> dict[str, Any]:
    """timm VisionTransformer kwargs from an arch dict whose values are names and numbers (JSON in results)."""
    from functools import partial

    from timm.layers import LayerNorm, SwiGLUPacked

    kwargs = dict(arch)
    eps = kwargs.pop("norm_eps", None)
    if eps is not None:
        kwargs["norm_layer"] = partial(LayerNorm, eps=eps)
    mlp = kwargs.get("mlp_layer")
    if isinstance(mlp, str):
        if mlp not in MLP_LAYERS:
            raise ArchitectureError(f"unknown mlp_layer '{mlp}' in arch; known: {', '.join(MLP_LAYERS)}")
        kwargs["mlp_layer"] = SwiGLUPacked
    return kwargs


def _arch_parameters(spec: ArchSpec) -> tuple[set[str], str]:
    if spec.kwargs.get("family") == "beit":
        from ijepa_eval.encoders.beit import beit_parameters

        return beit_parameters(), "Beit"
    return _vit_parameters(), "ViT"


def resolve_arch(spec: ArchSpec, arch: str | Mapping[str, Any] | None) -> dict[str, Any] | str:
    """Inferred kwargs completed by ``arch``: a dict overrides single kwargs, a string names a timm model."""
    if arch is None:
        return spec.require_complete()
    if isinstance(arch, str):
        return arch
    if not isinstance(arch, Mapping):
        raise ArchitectureError(f"arch must be a timm model name or a dict of ViT kwargs, not {type(arch).__name__}")
    allowed, where = _arch_parameters(spec)
    bad = sorted(set(arch) - allowed)
    if bad:
        timm_class = "Beit" if where == "Beit" else "VisionTransformer"
        raise ArchitectureError(f"unknown {where} kwargs in arch: {', '.join(bad)}; see timm {timm_class}")
    return {**spec.kwargs, **arch}


def build_vit(arch: dict[str, Any] | str, img_size: int | None = None, *, meta_device: bool = False):
    """An empty timm model with no classifier head: a VisionTransformer (final norm on tokens unless the
    arch says ``fc_norm``/``final_norm``), or a Beit for BEiT-style weights (arch ``family: beit``)."""
    import timm
    from timm.models.vision_transformer import VisionTransformer

    if isinstance(arch, Mapping) and arch.get("family") == "beit":
        from ijepa_eval.encoders.beit import build_beit

        return build_beit(arch, img_size)
    common = dict(num_classes=0, global_pool="", fc_norm=False)
    if isinstance(arch, str):
        if not timm.is_model(arch):
            close = difflib.get_close_matches(arch, timm.list_models("vit*"), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ArchitectureError(f"unknown timm model '{arch}'.{hint} See timm.list_models('vit*')")
        extra = {"img_size": img_size} if img_size else {}
        try:
            vit = timm.create_model(arch, pretrained=False, **common, **extra)
        except TypeError as err:
            raise ArchitectureError(f"timm model '{arch}' is not a plain ViT ({err})") from err
        if not isinstance(vit, VisionTransformer):
            raise ArchitectureError(f"timm model '{arch}' is a {type(vit).__name__}, not a VisionTransformer")
        return vit
    kwargs = {**common, **vit_kwargs(arch), "num_classes": 0, "global_pool": ""}
    if img_size:
        kwargs["img_size"] = img_size
    try:
        return VisionTransformer(**kwargs, weight_init="skip", device="meta" if meta_device else None)
    except (TypeError, ValueError, AssertionError) as err:
        raise ArchitectureError(f"cannot build a ViT from arch {arch} ({err}); {ARCH_HINT}") from err


def arch_of(vit) -> dict[str, Any]:
    """The ViT kwargs of a built timm VisionTransformer (what results record as the model's arch); Beit's
    kwargs for a timm Beit."""
    if not hasattr(vit, "has_class_token"):  # timm Beit
        from ijepa_eval.encoders.beit import beit_arch_of

        return beit_arch_of(vit)
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
    from ijepa_eval.encoders.encoder import final_norm_of

    return {"tokens": {}, "pooled": {"fc_norm": True}, "none": {"final_norm": False}}[final_norm_of(vit)]
