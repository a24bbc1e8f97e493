"""``load_encoder``: the loading pipeline, one stage after the other, each in its own module:

    read (read.py)  ->  format (registry.py over formats/)  ->  architecture (architecture/)
        ->  build (build.py)  ->  Encoder (encoder.py)

Reading and inferring (``read_encoder_checkpoint``) are separate from building, so ``inspect`` can report
on checkpoints whose architecture is not fully known. A timm model name skips the first three stages.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ijepa_eval.encoders.architecture.base import ArchSpec, unused_keys, with_hints
from ijepa_eval.encoders.architecture.families import FAMILIES, arch_of, resolve_arch, split_encoder
from ijepa_eval.encoders.build import (
    build_for_checkpoint,
    build_vit,
    check_fit,
    fitted_state_dict,
    load_weights,
)
from ijepa_eval.encoders.encoder import Encoder, state_dict_sha256
from ijepa_eval.encoders.formats.base import Converted, Format
from ijepa_eval.encoders.formats.timm_weights import context_branch
from ijepa_eval.encoders.read import content_sha256, is_checkpoint_source, read_file
from ijepa_eval.encoders.registry import detect_format
from ijepa_eval.errors import ArchitectureError, CheckpointError

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

    def img_size(self, resolved: dict[str, Any] | str) -> int:
        """The resolution to build at: the resolved arch's (the user's value over the format's default over
        the weights'), or the weights' own for a timm model name."""
        return resolved["img_size"] if isinstance(resolved, dict) else self.arch.kwargs["img_size"]

    def build(self, resolved: dict[str, Any] | str, img_size: int | None = None):
        """(empty model for ``resolved``, these weights fitted to it, built on the meta device?)."""
        model, meta_device = build_for_checkpoint(self.family, resolved, img_size or self.img_size(resolved))
        weights = fitted_state_dict(self.state_dict, resolved, model, family=self.family, resample=self.resample)
        return model, weights, meta_device


def _convert(fmt: Format, obj: Any, branch: str | None, source: str) -> Converted:
    try:
        return fmt.convert(obj, branch)
    except (TypeError, ValueError, AttributeError, KeyError) as err:  # a field of the wrong type or shape
        raise CheckpointError(
            f"'{source}' looks like a {fmt.name} checkpoint but its contents are malformed "
            f"({type(err).__name__}: {str(err)[:100]}); re-save it"
        ) from err


def check_tensor_dict(state_dict: Any, source: str) -> None:
    """The chosen network must be a mapping of str keys to tensors; anything else is a damaged file."""
    if not isinstance(state_dict, Mapping):
        raise CheckpointError(f"'{source}': the network's weights are a {type(state_dict).__name__}, not a state dict")
    for key, value in state_dict.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(f"'{source}': entry {key!r} of the state dict is a {type(value).__name__}, "
                                  "not a tensor; the file is damaged or not a checkpoint")


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
    converted = _convert(fmt, obj, branch, source)
    check_tensor_dict(converted.state_dict, source)
    encoder_sd, other_keys = split_encoder(converted.family, converted.state_dict)
    if not encoder_sd:
        raise CheckpointError(f"'{source}' ({fmt.name}) has no ViT encoder keys (patch_embed, blocks, ...)")
    _check_finite(encoder_sd, source)
    meta = {**file_meta, **converted.meta} if file_meta else converted.meta
    return EncoderCheckpoint(
        source=source, sha256=content_sha256(path, obj), format=fmt.name, branch=converted.branch,
        branches=converted.branches, state_dict=encoder_sd, dropped_keys=converted.dropped_keys + other_keys,
        meta=meta, arch=with_hints(FAMILIES[converted.family].infer(encoder_sd), converted.arch),
        family=converted.family, notes=converted.notes, resample=converted.resample,
    )


def check_checkpoint_fits(ckpt: EncoderCheckpoint, resolved: dict[str, Any] | str, source: str) -> None:
    """What loading would find wrong with the weights (missing, extra or mis-shaped keys), without loading."""
    model, weights, _ = ckpt.build(resolved)
    check_fit(model, weights, source)


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
    kwargs overriding inferred ones and the format's defaults (e.g. ``{"num_heads": 8}``,
    ``{"final_norm": True}``, ``{"img_size": 448}``). ``img_size``: another input resolution (over
    ``arch``'s); the patch part of pos_embed is interpolated.
    """
    source = str(source)
    if not is_checkpoint_source(source):
        if arch is not None:
            raise ArchitectureError(f"arch is only for checkpoint files; the timm model '{source}' defines its own")
        return _load_timm(source, branch, img_size)
    ckpt = read_encoder_checkpoint(source, branch, trust_checkpoint=trust_checkpoint)  # read, format, arch inferred
    resolved = resolve_arch(ckpt.arch, arch)
    if ckpt.family == "beit" and isinstance(resolved, str):
        raise ArchitectureError(f"'{source}' holds BEiT-style weights; pass arch as a dict of Beit kwargs "
                                "(e.g. {\"num_heads\": 12}), not a timm model name")
    size = img_size or ckpt.img_size(resolved)
    model, weights, meta_device = ckpt.build(resolved, size)
    load_weights(model, weights, source, meta_device)
    arch_info = {**arch_of(model), "timm_model": resolved} if isinstance(resolved, str) else {**resolved, "img_size": size}
    return Encoder(model, ckpt.info(arch_info))


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
    timm_branch = context_branch(tag)
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
