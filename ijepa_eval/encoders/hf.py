"""Hugging Face ``transformers`` layouts without ``transformers``: ``config.json`` + weights -> timm names.

A source is a folder written by ``save_pretrained`` or ``hf-hub:<org>/<name>[@revision]``, looked up in
the local HF cache only (never downloaded here). Supported ``model_type``s: ijepa, vit, vit_mae, dinov2,
dinov2_with_registers, from the base model or a task class (``ViTMAEForPreTraining``,
``*ForImageClassification``): the base model's prefix (``vit.``, ``dinov2.`` ...) is found from the patch
embedding key; decoders, classifiers and poolers are dropped and listed.

timm's own hub layout (``hf-hub:timm/<model>.<tag>``: ``config.json`` with ``architecture`` and
``pretrained_cfg``, timm-named weights) is read here too, without timm's download path.

Branches: ``transformers``' I-JEPA conversion (``convert_ijepa_to_hf.py``) and timm's I-JEPA weights
(``checkpoint_filter_fn``) both read the official checkpoint's ``encoder``, the context encoder, not the
EMA ``target_encoder`` the paper evaluates; such models load as ``branch: context``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ijepa_eval.encoders import dinov2
from ijepa_eval.errors import CheckpointError

HUB_PREFIX = "hf-hub:"
CONFIG = "config.json"
# Single-file and sharded weights, in the order transformers prefers them.
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
MODEL_TYPES = ("ijepa", "vit", "vit_mae", "dinov2", "dinov2_with_registers")
CONTEXT_ONLY = {"ijepa"}  # conversions that kept the context encoder
PATCH_KEY = "embeddings.patch_embeddings.projection.weight"
EMBEDDINGS = {
    "embeddings.cls_token": "cls_token", "embeddings.position_embeddings": "pos_embed",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight", "layernorm.bias": "norm.bias",
}
# Inside ``encoder.layer.{i}.``; the first matching prefix wins (attention.output before output).
LAYER_RENAMES = (
    ("layernorm_before.", "norm1."), ("layernorm_after.", "norm2."), ("norm1.", "norm1."), ("norm2.", "norm2."),
    ("attention.output.dense.", "attn.proj."), ("intermediate.dense.", "mlp.fc1."), ("output.dense.", "mlp.fc2."),
    ("mlp.fc1.", "mlp.fc1."), ("mlp.fc2.", "mlp.fc2."), ("mlp.weights_in.", "mlp.fc1."), ("mlp.weights_out.", "mlp.fc2."),
    ("layer_scale1.lambda1", "ls1.gamma"), ("layer_scale2.lambda1", "ls2.gamma"),
)
QKV = ("query", "key", "value")
ACTIVATIONS = {"gelu": None}  # transformers' "gelu" is exact erf GELU, timm's default


@dataclass
class HFFolder:
    """What ``save_pretrained`` wrote: the parsed config.json and every tensor of the model."""

    path: Path
    config: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    files: list[Path]


def folder_sha256(folder: HFFolder) -> str:
    """One hash over config.json and the weight files: a folder's content identity for caches and results."""
    from ijepa_eval.io import sha256_file

    h = hashlib.sha256()
    for path in [folder.path / CONFIG, *folder.files]:
        h.update(f"{path.name}:{sha256_file(path)};".encode())
    return h.hexdigest()


def is_hf_source(source: str | os.PathLike) -> bool:
    text = str(source)
    return text.startswith(HUB_PREFIX) or (Path(text).is_dir() and (Path(text) / CONFIG).is_file())


def resolve(source: str) -> Path:
    """The local folder of a ``save_pretrained`` folder or of a cached ``hf-hub:`` id (offline)."""
    if not source.startswith(HUB_PREFIX):
        return Path(source)
    repo_id, _, revision = source[len(HUB_PREFIX):].partition("@")
    if repo_id.count("/") != 1:
        raise CheckpointError(f"'{source}' is not a hub id; write hf-hub:<org>/<name>, e.g. hf-hub:facebook/ijepa_vith14_1k")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    cache_dir = os.environ.get("HF_HUB_CACHE") or None  # read now: huggingface_hub reads it at import
    try:
        return Path(snapshot_download(repo_id, revision=revision or None, cache_dir=cache_dir, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, ValueError) as err:
        raise CheckpointError(
            f"'{source}' is not in the local HF cache ({type(err).__name__}); download it first: "
            f"hf download {repo_id}{f' --revision {revision}' if revision else ''} (then it loads offline)"
        ) from err


def _read_weights(folder: Path) -> tuple[dict[str, torch.Tensor], list[Path]]:
    from ijepa_eval.encoders.loading import read_file

    name = next((n for n in WEIGHT_FILES if (folder / n).is_file()), None)
    if name is None:
        raise CheckpointError(f"'{folder}' has config.json but none of {', '.join(WEIGHT_FILES)}; "
                              "download them too (hf download) or save the model with save_pretrained")
    if name.endswith(".index.json"):
        try:
            weight_map = json.loads((folder / name).read_text())["weight_map"]
            files = [folder / f for f in sorted(set(weight_map.values()))]
        except (OSError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
            raise CheckpointError(f"cannot read the shard index '{folder / name}' ({type(err).__name__}); "
                                  "re-download or re-save the model") from err
    else:
        files = [folder / name]
    state_dict: dict[str, torch.Tensor] = {}
    for path in files:
        obj, _ = read_file(path)  # safe: weights_only for .bin, safetensors otherwise
        state_dict.update(obj)
    return state_dict, files


def read_hf_folder(source: str | os.PathLike) -> tuple[HFFolder, dict[str, str]]:
    """A save_pretrained folder or cached hub id, read safely (safetensors, or torch.load with weights_only)."""
    folder = resolve(str(source))
    if not (folder / CONFIG).is_file():
        raise CheckpointError(f"'{folder}' is a folder without config.json; point --ckpt at a checkpoint file "
                              "or a transformers save_pretrained folder")
    try:
        config = json.loads((folder / CONFIG).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"cannot read '{folder / CONFIG}' ({type(err).__name__}); re-download or re-save it") from err
    if not isinstance(config, dict):
        raise CheckpointError(f"'{folder / CONFIG}' holds a JSON {type(config).__name__}, not an object; "
                              "re-download or re-save it")
    state_dict, files = _read_weights(folder)
    return HFFolder(folder, config, state_dict, files), {}


def _base_prefix(state_dict: Mapping[str, torch.Tensor], source: Path) -> str:
    prefixes = [k[: -len(PATCH_KEY)] for k in state_dict if k.endswith(PATCH_KEY)]
    if len(prefixes) != 1:
        raise CheckpointError(f"'{source}': expected one '{PATCH_KEY}' key, found {len(prefixes)}; not a ViT model folder")
    return prefixes[0]


def _rename_layer(rest: str, key: str) -> str:
    for old, new in LAYER_RENAMES:
        if rest.startswith(old):
            return new + rest[len(old):]
    raise CheckpointError(f"unexpected key '{key}' in a transformers ViT layer; this model type is not supported")


def to_timm(state_dict: Mapping[str, torch.Tensor], prefix: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(timm-named encoder weights, dropped keys) from a transformers ViT-family state dict."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    dropped = []
    for key, value in state_dict.items():
        name = key[len(prefix):] if key.startswith(prefix) else None
        if name in EMBEDDINGS:
            out[EMBEDDINGS[name]] = value
        elif name is not None and name.startswith("encoder.layer."):
            index, rest = name[len("encoder.layer."):].split(".", 1)
            if rest.startswith("attention.attention."):
                which, param = rest[len("attention.attention."):].split(".", 1)
                qkv.setdefault((index, param), {})[which] = value
            else:
                out[f"blocks.{index}.{_rename_layer(rest, key)}"] = value
        elif name != "embeddings.register_tokens":
            dropped.append(key)  # task heads, decoder, pooler, mask_token
    for (index, param), parts in qkv.items():
        if set(parts) != set(QKV):
            raise CheckpointError(f"layer {index}: attention {param} has {sorted(parts)}, expected query, key, value")
        out[f"blocks.{index}.attn.qkv.{param}"] = torch.cat([parts[p] for p in QKV])
    registers = state_dict.get(prefix + "embeddings.register_tokens")
    if registers is not None:
        dinov2.fold_registers(out, registers)
    return out, sorted(dropped)


def _config_arch(config: Mapping[str, Any], model_type: str) -> dict[str, Any]:
    """ViT kwargs only the config knows: heads, LayerNorm eps, activation (and DINOv2's family facts)."""
    if "num_attention_heads" not in config:
        raise CheckpointError("config.json has no num_attention_heads; re-save the model with save_pretrained")
    eps = config.get("layer_norm_eps", 1e-6 if model_type.startswith("dinov2") else 1e-12)  # the config classes' defaults
    arch: dict[str, Any] = {"num_heads": int(config["num_attention_heads"]), "norm_eps": float(eps)}
    if model_type.startswith("dinov2"):
        return {**arch, **dinov2.family_arch(bool(config.get("use_swiglu_ffn")))}
    act = config.get("hidden_act", "gelu")
    if act not in ACTIVATIONS:
        raise CheckpointError(f"hidden_act '{act}' is not supported (only {', '.join(ACTIVATIONS)})")
    return arch


def timm_context_branch(tag: str | None) -> str | None:
    """"context" for timm's I-JEPA weights (tags ``in1k_ijepa``, ``in22k_ijepa``), else None."""
    return "context" if tag and tag.endswith("_ijepa") else None


def detect_timm(obj: Any) -> bool:
    return isinstance(obj, HFFolder) and "architecture" in obj.config and "model_type" not in obj.config


def convert_timm(obj: HFFolder, branch: str | None):
    """timm's hub layout: weights already in timm names; the tag tells timm's I-JEPA (context) weights."""
    from ijepa_eval.encoders.formats import Converted, split_backbone

    tag = (obj.config.get("pretrained_cfg") or {}).get("tag")
    context = timm_context_branch(tag)
    if branch not in (None, context):
        raise CheckpointError(f"'{obj.path}' (timm {obj.config['architecture']}.{tag}) holds one network "
                              f"({context or 'no branches'}); drop --branch/branch='{branch}'")
    state_dict, dropped = split_backbone(obj.state_dict)
    meta = {"architecture": obj.config["architecture"], "pretrained_tag": tag, "folder": str(obj.path)}
    return Converted(state_dict, context, [context] if context else [], dropped, meta)


def detect(obj: Any) -> bool:
    return isinstance(obj, HFFolder) and obj.config.get("model_type") in MODEL_TYPES


def convert(obj: HFFolder, branch: str | None):
    """One HF model folder -> Converted (timm names, config facts, branch told honestly)."""
    from ijepa_eval.encoders.formats import Converted, _no_branch

    model_type = obj.config["model_type"]
    state_dict, dropped = to_timm(obj.state_dict, _base_prefix(obj.state_dict, obj.path))
    meta = {"model_type": model_type, "architectures": obj.config.get("architectures"),
            "transformers_version": obj.config.get("transformers_version"), "folder": str(obj.path)}
    resample = dinov2.resample("reg_token" in state_dict) if model_type.startswith("dinov2") else {}
    if model_type in CONTEXT_ONLY:
        if branch not in (None, "context"):
            raise CheckpointError(
                f"a transformers {model_type} folder holds only the context encoder (its conversion read the "
                "checkpoint's 'encoder'); for the target encoder load the official .pth.tar"
            )
        meta["branch_note"] = "context encoder: transformers' convert_ijepa_to_hf.py read 'encoder', not 'target_encoder'"
        return Converted(state_dict, "context", ["context"], dropped, meta,
                         arch=_config_arch(obj.config, model_type), resample=resample)
    _no_branch(branch, f"transformers {model_type}")
    return Converted(state_dict, dropped_keys=dropped, meta=meta, arch=_config_arch(obj.config, model_type),
                     resample=resample)
