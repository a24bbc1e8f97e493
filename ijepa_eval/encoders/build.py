"""Stage 4 of loading: the timm model an architecture describes, and the checkpoint's weights fitted to it.

``build_vit`` makes an empty model without a head: a VisionTransformer from kwargs (on the meta device for
checkpoints, so multi-GB ViTs cost no init) or a timm model name, or a Beit for BEiT-style weights.
``fitted_state_dict`` removes the keys the architecture leaves out, fits Beit's tables and resamples
``pos_embed`` to the model's grid; ``load_weights`` loads strictly, after ``check_fit`` has listed every
missing, unexpected or mis-shaped key.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F

from ijepa_eval.encoders.architecture.base import ARCH_HINT, unused_keys
from ijepa_eval.encoders.architecture.beit import EXTRA_KWARGS as BEIT_EXTRA_KWARGS
from ijepa_eval.errors import ArchitectureError

MLP_LAYERS = ("swiglu_packed",)  # timm SwiGLUPacked: fc1 = [x1; x2] -> silu(x1) * x2 (DINOv2 giant)


def vit_kwargs(arch: Mapping[str, Any]) -> dict[str, Any]:
    """timm VisionTransformer kwargs from an arch dict whose values are names and numbers (JSON in results)."""
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


def build_vit(arch: dict[str, Any] | str, img_size: int | None = None, *, meta_device: bool = False):
    """An empty timm model with no classifier head: a VisionTransformer (final norm on tokens unless the
    arch says ``fc_norm``/``final_norm``), or a Beit for BEiT-style weights (arch ``family: beit``)."""
    import timm
    from timm.models.vision_transformer import VisionTransformer

    if isinstance(arch, Mapping) and arch.get("family") == "beit":
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


def build_beit(arch: Mapping[str, Any], img_size: int | None = None):
    """An empty timm Beit without head; ``final_norm: False`` removes its final norm (no norm in the weights)."""
    from timm.layers import LayerNorm
    from timm.models.beit import Beit

    kwargs = {k: v for k, v in arch.items() if k not in BEIT_EXTRA_KWARGS}
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


def build_for_checkpoint(family: str, arch: dict[str, Any] | str, img_size: int):
    """(model, built on the meta device?) for a checkpoint's weights: meta avoids init cost for multi-GB
    ViTs (Beit's non-persistent buffers need a real device)."""
    meta_device = not isinstance(arch, str) and family == "vit"
    return build_vit(arch, img_size, meta_device=meta_device), meta_device


def resample_with_offset(pos: torch.Tensor, new_size: Sequence[int], num_prefix: int, offset: float,
                         antialias: bool) -> torch.Tensor:
    """DINOv2's ``interpolate_pos_encoding``: bicubic by scale factor (new + offset) / old, landing on ``new``."""
    prefix, grid = pos[:, :num_prefix], pos[:, num_prefix:].float()
    old, dim = math.isqrt(grid.shape[1]), grid.shape[-1]
    scale = tuple((n + offset) / old for n in new_size)
    grid = F.interpolate(grid.reshape(1, old, old, dim).permute(0, 3, 1, 2), scale_factor=scale, mode="bicubic",
                         antialias=antialias)
    if tuple(grid.shape[-2:]) != tuple(new_size):
        raise ArchitectureError(f"DINOv2 position grid {old}x{old} cannot be resampled to {tuple(new_size)}")
    return torch.cat([prefix, grid.permute(0, 2, 3, 1).reshape(1, -1, dim).to(pos.dtype)], dim=1)


def _resample_pos_embed(state_dict: dict[str, torch.Tensor], vit, options: Mapping[str, Any]) -> None:
    """Fit the checkpoint's pos_embed to the model's grid; prefix slots (cls/reg) are kept, never invented."""
    from timm.layers import resample_abs_pos_embed

    pos = state_dict.get("pos_embed")
    if pos is None or vit.pos_embed is None or pos.shape == vit.pos_embed.shape:
        return
    num_prefix = 0 if vit.no_embed_class else vit.num_prefix_tokens
    old_side = int((pos.shape[1] - num_prefix) ** 0.5)
    options = dict(options)
    if offset := options.pop("offset", None):  # DINOv2 originals: scale factor shifted by an offset
        state_dict["pos_embed"] = resample_with_offset(pos, vit.patch_embed.grid_size, num_prefix, offset, **options)
        return
    state_dict["pos_embed"] = resample_abs_pos_embed(
        pos, new_size=list(vit.patch_embed.grid_size), old_size=[old_side, old_side], num_prefix_tokens=num_prefix,
        **options,
    )


def fitted_state_dict(state_dict: Mapping[str, torch.Tensor], arch: dict[str, Any] | str, model, *,
                      family: str, resample: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The checkpoint's encoder weights as ``model`` takes them: keys the architecture leaves out (e.g. MSN's
    final norm) removed, BEiT tables fitted (timm's own Beit filter), pos_embed resampled to the model's grid
    with the family's options (``resample``)."""
    unused = set(unused_keys(state_dict, arch))
    state_dict = {k: v for k, v in state_dict.items() if k not in unused}
    if family == "beit":
        from timm.models.beit import checkpoint_filter_fn

        return checkpoint_filter_fn(state_dict, model)
    _resample_pos_embed(state_dict, model, resample)
    return state_dict


def check_fit(model, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """ArchitectureError listing missing, unexpected and mis-shaped keys (used by loading and `inspect`)."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    misshaped = sorted(k for k in set(expected) & set(state_dict) if expected[k].shape != state_dict[k].shape)
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
        if keys:
            shown = ", ".join(
                f"{k} {tuple(state_dict[k].shape)} vs {tuple(expected[k].shape)}" if label == "mis-shaped" else k
                for k in keys[:5]
            )
            problems.append(f"{len(keys)} {label} ({shown}{', ...' if len(keys) > 5 else ''})")
    if problems:
        raise ArchitectureError(
            f"'{source}': encoder weights do not fit the architecture: {'; '.join(problems)}; "
            "check --arch/--branch or the checkpoint"
        )


def load_weights(model, state_dict: dict[str, torch.Tensor], source: str, meta_device: bool) -> None:
    """Strict load (in float32) after ``check_fit``; ``assign`` replaces meta-device parameters."""
    check_fit(model, state_dict, source)
    floats = {k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()}
    model.load_state_dict(floats, strict=True, assign=meta_device)
