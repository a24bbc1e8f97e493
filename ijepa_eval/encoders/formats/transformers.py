"""Hugging Face ``transformers`` folders without ``transformers``: ``config.json`` + weights -> timm names.

A folder written by ``save_pretrained`` (or an ``hf-hub:`` id from the local cache, read by the read
stage). ``model_type``s ijepa, vit, vit_mae, dinov2, dinov2_with_registers become timm VisionTransformer
weights; data2vec-vision (``Data2VecVisionModel`` / ``...ForImageClassification``) becomes timm Beit
weights. Base models or task classes (``ViTMAEForPreTraining``, ``*ForImageClassification``): the base
model's prefix (``vit.``, ``dinov2.``, ``data2vec_vision.`` ...) is found from the patch embedding key;
decoders, classifiers and poolers are dropped and listed. One key converter (``to_timm``) serves both
families: their layers differ only in names the table below lists.

Branches: ``transformers``' I-JEPA conversion (``convert_ijepa_to_hf.py``) read the official checkpoint's
``encoder``, the context encoder, not the EMA ``target_encoder`` the paper evaluates: such folders load as
``branch: context``.

data2vec-vision: the final norm is where the saved model has it: ``layernorm`` on tokens
(``use_mean_pooling: false``), ``pooler.layernorm`` after the mean (``use_mean_pooling: true`` with a
pooling layer, as in the classification models), or none (a bare model with ``use_mean_pooling: true``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ijepa_eval.encoders.formats import dinov2
from ijepa_eval.encoders.formats.base import Converted, beit_final_norm, no_branch
from ijepa_eval.encoders.read import HFFolder
from ijepa_eval.errors import CheckpointError

MODEL_TYPES = ("ijepa", "vit", "vit_mae", "dinov2", "dinov2_with_registers")  # -> timm VisionTransformer
BEIT_MODEL_TYPE = "data2vec-vision"  # -> timm Beit
CONTEXT_ONLY = {"ijepa"}  # conversions that kept the context encoder
PATCH_KEY = "embeddings.patch_embeddings.projection.weight"
# Outside the layers, after the base model's prefix.
TOP_LEVEL = {
    "embeddings.cls_token": "cls_token", "embeddings.position_embeddings": "pos_embed",
    "embeddings.register_tokens": "register_tokens",  # DINOv2 registers, folded as dinov2.fold_registers does
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight", "layernorm.bias": "norm.bias",
    "pooler.layernorm.weight": "fc_norm.weight", "pooler.layernorm.bias": "fc_norm.bias",  # data2vec mean pooling
    "encoder.relative_position_bias.relative_position_bias_table": "rel_pos_bias.relative_position_bias_table",
}
# Inside ``encoder.layer.{i}.``; the first matching prefix wins (attention.output before output).
LAYER_RENAMES = (
    ("layernorm_before.", "norm1."), ("layernorm_after.", "norm2."), ("norm1.", "norm1."), ("norm2.", "norm2."),
    ("attention.output.dense.", "attn.proj."), ("intermediate.dense.", "mlp.fc1."), ("output.dense.", "mlp.fc2."),
    ("mlp.fc1.", "mlp.fc1."), ("mlp.fc2.", "mlp.fc2."), ("mlp.weights_in.", "mlp.fc1."), ("mlp.weights_out.", "mlp.fc2."),
    ("layer_scale1.lambda1", "ls1.gamma"), ("layer_scale2.lambda1", "ls2.gamma"),  # DINOv2 LayerScale
    ("lambda_1", "gamma_1"), ("lambda_2", "gamma_2"),  # Beit LayerScale
    ("attention.attention.relative_position_bias.", "attn."),  # Beit per-block relative position tables
)
QKV = ("query", "key", "value")
ACTIVATIONS = {"gelu": None}  # transformers' "gelu" is exact erf GELU, timm's default
BEIT_NOTES = {
    "tokens": "features: transformers' layernorm on every token, then pooled (use_mean_pooling: false)",
    "pooled": "features: mean of the patch tokens, then pooler.layernorm, as pooler_output (use_mean_pooling: true)",
    "none": "features: the saved model has no final norm (use_mean_pooling: true, no pooling layer): raw block "
            "outputs, pooled",
}


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
    """(timm-named encoder weights, dropped keys) from a transformers ViT-family or data2vec-vision state dict.

    q/k/v are concatenated into ``attn.qkv``; BEiT-style attention has no key bias, so its query and value
    biases become ``attn.q_bias`` / ``attn.v_bias``. ``relative_position_index`` buffers are left out (timm
    recomputes them); keys outside the base model (heads, decoders, poolers, mask tokens) are dropped.
    """
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    dropped = []
    for key, value in state_dict.items():
        name = key[len(prefix):] if key.startswith(prefix) else ""
        if name.endswith("relative_position_index"):
            continue
        if name in TOP_LEVEL:
            out[TOP_LEVEL[name]] = value
        elif name.startswith("encoder.layer."):
            index, rest = name[len("encoder.layer."):].split(".", 1)
            which, _, param = rest.removeprefix("attention.attention.").partition(".")
            if rest.startswith("attention.attention.") and which in QKV:
                qkv.setdefault((index, param), {})[which] = value
            else:
                out[f"blocks.{index}.{_rename_layer(rest, key)}"] = value
        else:
            dropped.append(key)  # task heads, decoder, pooler, mask_token
    for (index, param), parts in qkv.items():
        block = f"blocks.{index}.attn."
        if set(parts) == set(QKV):
            out[f"{block}qkv.{param}"] = torch.cat([parts[p] for p in QKV])
        elif param == "bias" and set(parts) == {"query", "value"}:
            out[f"{block}q_bias"], out[f"{block}v_bias"] = parts["query"], parts["value"]
        else:
            raise CheckpointError(f"layer {index}: attention {param} has {sorted(parts)}, expected query, key, value")
    return out, sorted(dropped)


def _config_arch(config: Mapping[str, Any], model_type: str) -> dict[str, Any]:
    """Kwargs only the config knows: heads, LayerNorm eps, activation (DINOv2's family facts, data2vec's size)."""
    if "num_attention_heads" not in config:
        raise CheckpointError("config.json has no num_attention_heads; re-save the model with save_pretrained")
    eps = config.get("layer_norm_eps", 1e-6 if model_type.startswith("dinov2") else 1e-12)  # the config classes' defaults
    arch: dict[str, Any] = {"num_heads": int(config["num_attention_heads"]), "norm_eps": float(eps)}
    if model_type.startswith("dinov2"):
        return {**arch, **dinov2.family_arch(bool(config.get("use_swiglu_ffn")))}
    act = config.get("hidden_act", "gelu")
    if act not in ACTIVATIONS:
        raise CheckpointError(f"hidden_act '{act}' is not supported (only {', '.join(ACTIVATIONS)})")
    if model_type == BEIT_MODEL_TYPE:  # relative positions only: no pos_embed to read the grid from
        arch["img_size"] = int(config.get("image_size", 224))
    return arch


def _timm_weights(obj: HFFolder) -> tuple[dict[str, torch.Tensor], list[str]]:
    state_dict, dropped = to_timm(obj.state_dict, _base_prefix(obj.state_dict, obj.path))
    if "register_tokens" in state_dict:
        dinov2.fold_registers(state_dict, state_dict.pop("register_tokens"))
    return state_dict, dropped


def detect(obj: Any) -> bool:
    return isinstance(obj, HFFolder) and obj.config.get("model_type") in MODEL_TYPES


def convert(obj: HFFolder, branch: str | None) -> Converted:
    """A ViT-family folder -> Converted (timm names, config facts, branch told honestly)."""
    model_type = obj.config["model_type"]
    state_dict, dropped = _timm_weights(obj)
    meta = {"model_type": model_type, "architectures": obj.config.get("architectures"),
            "transformers_version": obj.config.get("transformers_version"), "folder": str(obj.path)}
    resample = dinov2.resample("reg_token" in state_dict) if model_type.startswith("dinov2") else {}
    arch = _config_arch(obj.config, model_type)
    if model_type in CONTEXT_ONLY:
        if branch not in (None, "context"):
            raise CheckpointError(
                f"a transformers {model_type} folder holds only the context encoder (its conversion read the "
                "checkpoint's 'encoder'); for the target encoder load the official .pth.tar"
            )
        meta["branch_note"] = "context encoder: transformers' convert_ijepa_to_hf.py read 'encoder', not 'target_encoder'"
        return Converted(state_dict, "context", ["context"], dropped, meta, arch=arch, resample=resample)
    no_branch(branch, f"transformers {model_type}")
    return Converted(state_dict, dropped_keys=dropped, meta=meta, arch=arch, resample=resample)


def detect_beit(obj: Any) -> bool:
    return isinstance(obj, HFFolder) and obj.config.get("model_type") == BEIT_MODEL_TYPE


def convert_beit(obj: HFFolder, branch: str | None) -> Converted:
    """A data2vec-vision folder -> Converted (timm Beit names, the final norm where the saved model has it)."""
    no_branch(branch, "transformers data2vec-vision")
    state_dict, dropped = _timm_weights(obj)
    meta = {k: obj.config[k] for k in ("architectures", "transformers_version", "use_mean_pooling") if k in obj.config}
    return Converted(state_dict, dropped_keys=dropped, meta=meta, family="beit",
                     arch=_config_arch(obj.config, BEIT_MODEL_TYPE), notes=[BEIT_NOTES[beit_final_norm(state_dict)]])
