"""Checkpoint layouts as a registry of small (detect, convert) pairs.

Each ``convert`` turns the loaded object into one network's timm-named state dict plus what it left out.
Exactly one detector must match; zero or several is an error, never a guess.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from ijepa_eval.encoders import cae, data2vec, dinov2, hf, msn
from ijepa_eval.errors import CheckpointError, unknown_choice


@dataclass
class Converted:
    """One network's weights (timm names, prefixes removed) and what the format knows around them."""

    state_dict: dict[str, torch.Tensor]
    branch: str | None = None
    branches: list[str] = field(default_factory=list)
    dropped_keys: list[str] = field(default_factory=list)  # keys of other networks (predictor, decoder, head)
    meta: dict[str, Any] = field(default_factory=dict)
    family: str = "vit"  # "vit" (timm VisionTransformer) | "beit" (timm Beit: data2vec, CAE)
    arch: dict[str, Any] = field(default_factory=dict)  # kwargs the format records (heads, norms, eval size)
    notes: list[str] = field(default_factory=list)  # what the features mean for this format, for `inspect`
    resample: dict[str, Any] = field(default_factory=dict)  # the family's pos_embed interpolation (timm options)


@dataclass(frozen=True)
class Format:
    name: str
    description: str
    detect: Callable[[Any], bool]
    convert: Callable[[Any, str | None], Converted]


def _is_tensor_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _jsonable(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_jsonable(v) for v in value)
    if isinstance(value, Mapping):
        return all(isinstance(k, str) and _jsonable(v) for k, v in value.items())
    return False


def scalar_meta(obj: Mapping[str, Any], skip: set[str]) -> dict[str, Any]:
    """Top-level entries worth showing: numbers, strings, argparse args, GradScaler states (no tensors)."""
    meta: dict[str, Any] = {}
    for key, value in obj.items():
        if key in skip:
            continue
        if isinstance(value, argparse.Namespace):
            meta[key] = {k: v if _jsonable(v) else repr(v) for k, v in vars(value).items()}
        elif _jsonable(value):
            meta[key] = value
    return meta


def strip_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Remove ``prefix`` when every key has it (DDP's ``module.``)."""
    if state_dict and all(k.startswith(prefix) for k in state_dict):
        return {k[len(prefix):]: v for k, v in state_dict.items()}
    return dict(state_dict)


def split_backbone(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """DINO/iBOT MultiCropWrapper dicts hold ``backbone.*`` and ``head.*``: keep the backbone."""
    state_dict = strip_prefix(state_dict, "module.")
    if not any(k.startswith("backbone.") for k in state_dict):
        return state_dict, []
    kept = {k[len("backbone."):]: v for k, v in state_dict.items() if k.startswith("backbone.")}
    return kept, sorted(k for k in state_dict if not k.startswith("backbone."))


def _pick_branch(branch: str | None, branches: Mapping[str, str], default: str, fmt: str) -> str:
    branch = default if branch is None else branch
    if branch not in branches:
        raise CheckpointError(f"{fmt} checkpoint: " + unknown_choice("branch", branch, branches))
    return branch


def _no_branch(branch: str | None, fmt: str) -> None:
    if branch is not None:
        raise CheckpointError(f"a {fmt} checkpoint holds one network; drop --branch/branch='{branch}'")


# -- I-JEPA (facebookresearch/ijepa src/train.py save_checkpoint) ---------------------------------------
IJEPA_BRANCHES = {"target": "target_encoder", "context": "encoder"}


def _detect_ijepa(obj: Any) -> bool:  # MSN saves the same two keys, plus its prototypes
    return isinstance(obj, Mapping) and "target_encoder" in obj and "encoder" in obj and "prototypes" not in obj


def _convert_ijepa(obj: Mapping[str, Any], branch: str | None) -> Converted:
    branch = _pick_branch(branch, IJEPA_BRANCHES, "target", "I-JEPA")
    state_dict = strip_prefix(obj[IJEPA_BRANCHES[branch]], "module.")
    predictor = strip_prefix(obj.get("predictor") or {}, "module.")
    skip = {"encoder", "target_encoder", "predictor", "opt"}
    return Converted(
        state_dict, branch, list(IJEPA_BRANCHES), sorted(f"predictor.{k}" for k in predictor),
        scalar_meta(obj, skip),
    )


# -- DINO / iBOT (facebookresearch/dino main_dino.py, bytedance/ibot main_ibot.py save_dict) -------------
TEACHER_STUDENT = ("teacher", "student")


def _detect_dino(obj: Any) -> bool:
    return isinstance(obj, Mapping) and "teacher" in obj and "student" in obj and "ibot_loss" not in obj


def _detect_ibot(obj: Any) -> bool:
    return isinstance(obj, Mapping) and "teacher" in obj and "student" in obj and "ibot_loss" in obj


def _convert_teacher_student(obj: Mapping[str, Any], branch: str | None) -> Converted:
    branch = _pick_branch(branch, dict.fromkeys(TEACHER_STUDENT), "teacher", "DINO/iBOT")
    state_dict, dropped = split_backbone(obj[branch])
    skip = {"teacher", "student", "optimizer", "dino_loss", "ibot_loss", "decoder"}
    return Converted(state_dict, branch, list(TEACHER_STUDENT), dropped, scalar_meta(obj, skip))


# -- MAE training checkpoint (facebookresearch/mae util/misc.py save_model) -----------------------------
WRAPPER_KEYS = ("model", "state_dict")
FC_NORM_NOTE = ("fc_norm and no norm (MAE fine-tuned with global_pool, timm *_gap models): features are the mean "
                "of the patch tokens, then fc_norm, as the model's own head reads them")


def _wrapped_key(obj: Any) -> str | None:
    if not isinstance(obj, Mapping):
        return None
    keys = [k for k in WRAPPER_KEYS if _is_tensor_dict(obj.get(k))]
    return keys[0] if len(keys) == 1 else None


def _has_mae_decoder(state_dict: Mapping[str, Any]) -> bool:
    return any(k.startswith("decoder_") for k in strip_prefix(state_dict, "module."))


def _detect_mae(obj: Any) -> bool:
    return _wrapped_key(obj) == "model" and _has_mae_decoder(obj["model"])


def _detect_wrapped(obj: Any) -> bool:
    from ijepa_eval.encoders.beit import is_beit_style

    key = _wrapped_key(obj)
    return key is not None and not _has_mae_decoder(obj[key]) and not is_beit_style(obj[key])


def _convert_wrapped(obj: Mapping[str, Any], branch: str | None) -> Converted:
    key = _wrapped_key(obj)
    _no_branch(branch, f"{{'{key}': ...}}")
    state_dict, dropped = split_backbone(obj[key])
    notes = [FC_NORM_NOTE] if "fc_norm.weight" in state_dict and "norm.weight" not in state_dict else []
    return Converted(state_dict, dropped_keys=dropped, meta=scalar_meta(obj, {key, "optimizer", "model_ema"}),
                     notes=notes)


# -- plain state dicts (timm names, bare I-JEPA encoder, DINO backbone releases, safetensors) ------------
def _detect_state_dict(obj: Any) -> bool:
    return _is_tensor_dict(obj) and any(k.endswith("patch_embed.proj.weight") for k in obj) and not dinov2.detect(obj)


def _convert_state_dict(obj: Mapping[str, torch.Tensor], branch: str | None) -> Converted:
    from ijepa_eval.encoders.beit import drop_position_indices, is_beit_style

    _no_branch(branch, "plain state dict")
    state_dict, dropped = split_backbone(obj)
    if is_beit_style(state_dict):  # a timm Beit state dict (data2vec/CAE/BEiT encoders re-saved)
        return Converted(drop_position_indices(state_dict), dropped_keys=dropped, family="beit")
    return Converted(state_dict, dropped_keys=dropped)


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("ijepa", "I-JEPA training checkpoint (encoder, target_encoder, predictor, opt, ...)",
               _detect_ijepa, _convert_ijepa),
        Format("dino", "DINO training checkpoint (student, teacher, dino_loss, ...)",
               _detect_dino, _convert_teacher_student),
        Format("ibot", "iBOT training checkpoint (student, teacher, ibot_loss, ...)",
               _detect_ibot, _convert_teacher_student),
        Format("mae", "MAE training checkpoint ({'model'} with decoder_* keys)", _detect_mae, _convert_wrapped),
        Format("wrapped", "{'model': state_dict} or {'state_dict': state_dict} (MAE/iBOT releases, DeiT)",
               _detect_wrapped, _convert_wrapped),
        Format("state_dict", "plain timm-named state dict (bare encoder, DINO backbone, safetensors)",
               _detect_state_dict, _convert_state_dict),
        # the paper's other baselines in their release layouts (their modules build on the helpers above)
        Format("msn", "MSN training checkpoint (encoder, target_encoder, prototypes, ...)",
               msn.detect_msn, msn.convert_msn),
        Format("data2vec", "data2vec vision checkpoint (BEiT-style {'model', 'model_ema'} with a D x D lm_head)",
               data2vec.detect_data2vec, data2vec.convert_data2vec),
        Format("hf-data2vec-vision", "transformers Data2VecVision* folder (config.json + safetensors/bin)",
               data2vec.detect_hf_data2vec, data2vec.convert_hf_data2vec),
        Format("cae", "CAE training checkpoint ({'model'} with encoder.* and pretext_neck.*)",
               cae.detect_cae, cae.convert_cae),
        # transformers folders / hf-hub ids (encoders/hf.py), DINOv2 releases (encoders/dinov2.py)
        Format("hf", "transformers save_pretrained folder or hf-hub:<org>/<name> (config.json + weights)",
               hf.detect, hf.convert),
        Format("timm-hub", "timm hub folder or hf-hub:timm/<model> (config.json with architecture, timm names)",
               hf.detect_timm, hf.convert_timm),
        Format("dinov2", "DINOv2 release (facebookresearch/dinov2 *_pretrain.pth: mask_token, ls1.gamma, ...)",
               dinov2.detect, dinov2.convert),
    )
}


def detect_format(obj: Any, source: str) -> Format:
    try:
        matches = [f for f in FORMATS.values() if f.detect(obj)]
    except (TypeError, AttributeError) as err:  # e.g. a state dict with int keys: no layout has those
        raise CheckpointError(
            f"'{source}' holds data that is not a checkpoint of named weights ({type(err).__name__}: "
            f"{str(err)[:100]}); save the encoder's state_dict (timm names) instead"
        ) from err
    if len(matches) == 1:
        return matches[0]
    if matches:
        names = ", ".join(f.name for f in matches)
        raise CheckpointError(f"'{source}' matches several checkpoint formats ({names}); re-save its encoder state_dict")
    if isinstance(obj, Mapping):
        keys = ", ".join(sorted(map(str, obj))[:8])
        what = f"a dict with keys {keys}{', ...' if len(obj) > 8 else ''}"
    elif isinstance(obj, hf.HFFolder):
        what = f"a transformers folder of model_type '{obj.config.get('model_type')}'"
    else:
        what = f"a {type(obj).__name__}"
    raise CheckpointError(
        f"'{source}' holds {what}, which matches no known checkpoint format "
        f"({', '.join(FORMATS)}); save the encoder's state_dict (timm names) instead"
    )
