"""``load_encoder``: file -> format -> one network's state dict -> architecture -> frozen timm ViT.

Reading and inferring (``read_encoder_checkpoint``) are separate from building, so ``inspect`` can report
on checkpoints whose architecture is not fully known.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ijepa_eval.encoders.arch import (
    ArchSpec,
    arch_of,
    build_vit,
    infer_arch,
    is_encoder_key,
    resolve_arch,
    unused_keys,
    with_hints,
)
from ijepa_eval.encoders.beit import fit_beit_state_dict, infer_beit_arch, is_beit_key
from ijepa_eval.encoders.dinov2 import resample_with_offset
from ijepa_eval.encoders.encoder import Encoder, state_dict_sha256
from ijepa_eval.encoders.formats import detect_format
from ijepa_eval.encoders.hf import HFFolder, folder_sha256, is_hf_source, timm_context_branch
from ijepa_eval.encoders.loading import read_file
from ijepa_eval.errors import ArchitectureError, CheckpointError
from ijepa_eval.io import sha256_file

RANDOM_PREFIX = "random:"


@dataclass
class EncoderCheckpoint:
    """One encoder's weights read from a file, with everything ``inspect`` and results report."""

    source: str
    sha256: str
    format: str
    branch: str | None
    branches: list[str]
    state_dict: dict[str, torch.Tensor]
    dropped_keys: list[str]
    meta: dict[str, Any]
    arch: ArchSpec
    family: str = "vit"
    notes: list[str] | None = None
    resample: dict[str, Any] = field(default_factory=dict)  # pos_embed interpolation options of the family

    def info(self, arch: dict[str, Any] | str) -> dict[str, Any]:
        """What Encoder.info and `inspect` report; keys the arch leaves out (MSN's norm) count as dropped."""
        dropped = self.dropped_keys + unused_keys(self.state_dict, arch)
        return dict(
            source=self.source, sha256=self.sha256, format=self.format, branch=self.branch,
            branches=list(self.branches), arch=arch, dropped_keys=dropped, meta=dict(self.meta),
            notes=list(self.notes or []),
        )


# Per model family: which keys are encoder keys, and the architecture they imply.
FAMILIES = {"vit": (is_encoder_key, infer_arch), "beit": (is_beit_key, infer_beit_arch)}


def _check_finite(state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    bad = [k for k, v in state_dict.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        raise CheckpointError(
            f"'{source}': encoder tensor '{bad[0]}'{more} holds NaN/Inf values (the run diverged?); "
            "use an earlier checkpoint"
        )


def read_encoder_checkpoint(
    path: str | Path, branch: str | None = None, *, trust_checkpoint: bool = False
) -> EncoderCheckpoint:
    """Read a checkpoint (file, transformers folder, hf-hub id), pick the branch, split encoder keys, infer the arch."""
    source = str(path)
    obj, file_meta = read_file(path, trust_checkpoint=trust_checkpoint)
    fmt = detect_format(obj, source)
    try:
        converted = fmt.convert(obj, branch)
    except (TypeError, ValueError, AttributeError, KeyError) as err:  # a field of the wrong type or shape
        raise CheckpointError(
            f"'{source}' looks like a {fmt.name} checkpoint but its contents are malformed "
            f"({type(err).__name__}: {str(err)[:100]}); re-save it"
        ) from err
    check_tensor_dict(converted.state_dict, source)
    is_key, infer = FAMILIES[converted.family]
    encoder_sd = {k: v for k, v in converted.state_dict.items() if is_key(k)}
    dropped = converted.dropped_keys + sorted(k for k in converted.state_dict if not is_key(k))
    if not encoder_sd:
        raise CheckpointError(f"'{source}' ({fmt.name}) has no ViT encoder keys (patch_embed, blocks, ...)")
    _check_finite(encoder_sd, source)
    meta = {**file_meta, **converted.meta} if file_meta else converted.meta
    return EncoderCheckpoint(
        source=source, sha256=_content_sha256(path, obj), format=fmt.name, branch=converted.branch,
        branches=converted.branches, state_dict=encoder_sd, dropped_keys=dropped, meta=meta,
        arch=with_hints(infer(encoder_sd), converted.arch), family=converted.family, notes=converted.notes,
        resample=converted.resample,
    )


def _content_sha256(path: str | Path, obj: Any) -> str:
    return folder_sha256(obj) if isinstance(obj, HFFolder) else sha256_file(path)


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


def check_tensor_dict(state_dict: Any, source: str) -> None:
    """The chosen network must be a mapping of str keys to tensors; anything else is a damaged file."""
    if not isinstance(state_dict, Mapping):
        raise CheckpointError(f"'{source}': the network's weights are a {type(state_dict).__name__}, not a state dict")
    for key, value in state_dict.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(f"'{source}': entry {key!r} of the state dict is a {type(value).__name__}, "
                                  "not a tensor; the file is damaged or not a checkpoint")


def check_fit(vit, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """ArchitectureError listing missing, unexpected and mis-shaped keys (used by loading and `inspect`)."""
    expected = vit.state_dict()
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


def _strict_load(vit, state_dict: dict[str, torch.Tensor], source: str, meta_device: bool) -> None:
    check_fit(vit, state_dict, source)
    floats = {k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()}
    vit.load_state_dict(floats, strict=True, assign=meta_device)


def _build(ckpt: EncoderCheckpoint, resolved: dict[str, Any] | str, size: int):
    """(model, built on the meta device?): meta avoids init cost for multi-GB ViTs (Beit's non-persistent
    buffers need a real device)."""
    meta_device = not isinstance(resolved, str) and ckpt.family == "vit"
    return build_vit(resolved, size, meta_device=meta_device), meta_device


def fitted_state_dict(ckpt: EncoderCheckpoint, resolved: dict[str, Any] | str, vit) -> dict[str, torch.Tensor]:
    """The checkpoint's encoder weights as ``vit`` takes them: keys the architecture leaves out (e.g. MSN's
    final norm) removed, BEiT buffers fitted, pos_embed resampled to the model's grid."""
    unused = set(unused_keys(ckpt.state_dict, resolved))
    state_dict = {k: v for k, v in ckpt.state_dict.items() if k not in unused}
    if ckpt.family == "beit":
        return fit_beit_state_dict(state_dict, vit)
    _resample_pos_embed(state_dict, vit, ckpt.resample)
    return state_dict


def check_checkpoint_fits(ckpt: EncoderCheckpoint, resolved: dict[str, Any] | str, source: str) -> None:
    """What loading would find wrong with the weights (missing, extra or mis-shaped keys), without loading."""
    vit, _ = _build(ckpt, resolved, ckpt.arch.kwargs["img_size"])
    check_fit(vit, fitted_state_dict(ckpt, resolved, vit), source)


def is_checkpoint_source(source: str) -> bool:
    """A file or transformers folder on disk, or an hf-hub id; anything else is a timm model name."""
    return Path(source).exists() or is_hf_source(source)


def load_encoder(
    source: str | Path,
    branch: str | None = None,
    arch: str | Mapping[str, Any] | None = None,
    *,
    img_size: int | None = None,
    trust_checkpoint: bool = False,
) -> Encoder:
    """Frozen encoder from a checkpoint file, a transformers folder or ``hf-hub:<org>/<name>`` (local HF
    cache), or a timm model name (``random:NAME`` for a random init).

    ``branch``: None = the format's default (I-JEPA and MSN "target", DINO/iBOT "teacher", data2vec
    "student"). ``arch``: None = inferred; a timm model name; or a dict of ViT (Beit for BEiT-style weights)
    kwargs overriding inferred ones (e.g. ``{"num_heads": 8}``, ``{"final_norm": True}``).
    ``img_size``: another input resolution; the patch part of pos_embed is interpolated.
    """
    source = str(source)
    if not is_checkpoint_source(source):
        if arch is not None:
            raise ArchitectureError(f"arch is only for checkpoint files; the timm model '{source}' defines its own")
        return _load_timm(source, branch, img_size)
    ckpt = read_encoder_checkpoint(source, branch, trust_checkpoint=trust_checkpoint)
    resolved = resolve_arch(ckpt.arch, arch)
    if ckpt.family == "beit" and isinstance(resolved, str):
        raise ArchitectureError(f"'{source}' holds BEiT-style weights; pass arch as a dict of Beit kwargs "
                                "(e.g. {\"num_heads\": 12}), not a timm model name")
    size = img_size or ckpt.arch.kwargs["img_size"]
    vit, meta_device = _build(ckpt, resolved, size)
    _strict_load(vit, fitted_state_dict(ckpt, resolved, vit), source, meta_device)
    arch_info = arch_of(vit) if isinstance(resolved, str) else {**resolved, "img_size": size}
    if isinstance(resolved, str):
        arch_info["timm_model"] = resolved
    return Encoder(vit, ckpt.info(arch_info))


def _load_timm(name: str, branch: str | None, img_size: int | None) -> Encoder:
    """A timm model by name: pretrained weights through timm's own cache/hub, or ``random:NAME``."""
    import timm

    random_init = name.startswith(RANDOM_PREFIX)
    model_name = name[len(RANDOM_PREFIX):] if random_init else name
    if not timm.is_model(model_name):
        raise CheckpointError(
            f"'{name}' is neither an existing checkpoint file nor a timm model name; check the path "
            f"(timm names: timm.list_models('vit*'); prefix '{RANDOM_PREFIX}' for a random init)"
        )
    if random_init:
        vit = build_vit(model_name, img_size)
    else:
        extra = {"img_size": img_size} if img_size else {}
        try:
            vit = timm.create_model(model_name, pretrained=True, num_classes=0, global_pool="", fc_norm=False, **extra)
        except (OSError, RuntimeError, ValueError) as err:
            raise CheckpointError(
                f"cannot get pretrained weights for timm model '{model_name}' ({str(err).splitlines()[0][:120]}); "
                "download them first (HF hub cache) or pass a checkpoint file"
            ) from err
    tag = None if random_init else getattr(vit, "pretrained_cfg", {}).get("tag")
    timm_branch = timm_context_branch(tag)
    if branch not in (None, timm_branch):
        raise CheckpointError(f"the timm model '{name}' holds one network ({timm_branch or 'no branches'}); "
                              f"drop --branch/branch='{branch}'")
    info = dict(
        # A random init is identified by its weights (seeds differ), pretrained weights by their name.
        source=name, sha256=state_dict_sha256(vit.state_dict()) if random_init else hashlib.sha256(name.encode()).hexdigest(),
        format="timm", branch=timm_branch, branches=[timm_branch] if timm_branch else [],
        arch={**arch_of(vit), "timm_model": model_name}, dropped_keys=[],
        meta={"pretrained": not random_init, "pretrained_tag": tag},
    )
    return Encoder(vit, info)

