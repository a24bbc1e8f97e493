"""data2vec vision: the official BEiT-style checkpoints and ``transformers`` Data2VecVision folders.

Official (facebookresearch/data2vec_vision ``beit/run_cyclical.py`` + ``utils.save_model``):
``{'model', 'optimizer', 'epoch', 'scaler', 'args', 'model_ema'}``; ``model`` is the student
(``modeling_cyclical.VisionTransformerForCyclicalTraining``: shared relative position bias, LayerScale,
q/v biases, ``mask_token``, a D x D ``lm_head`` regression head), ``model_ema`` the EMA teacher. Fine-tuning
and the transformers conversion read ``model``, the default branch here. The features are data2vec's own
linear probe (``modeling_finetune`` with ``use_mean_pooling`` and ``linear_classifier``): the mean of the
patch tokens, then ``fc_norm = LayerNorm(elementwise_affine=False)``, here a unit-affine ``fc_norm``. The
checkpoint's ``norm.*`` is dropped: pretraining trains it (the student's predictions pass ``norm`` before
``lm_head``), but ``run_class_finetuning.py`` never loads it (``norm`` is Identity with mean pooling).

transformers (``Data2VecVisionModel`` / ``...ForImageClassification`` saved with ``save_pretrained``):
``config.json`` + ``model.safetensors`` or ``pytorch_model.bin`` (or a sharded safetensors index), read
without importing transformers. The final norm is where the saved model has it: ``layernorm`` on tokens
(``use_mean_pooling: false``), ``pooler.layernorm`` after the mean (``use_mean_pooling: true`` with a
pooling layer, as in the classification models), or none (a bare model with ``use_mean_pooling: true``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from ijepa_eval.encoders.beit import is_beit_style
from ijepa_eval.encoders.hf import HFFolder
from ijepa_eval.errors import CheckpointError

OFFICIAL_BRANCHES = {"student": "model", "teacher": "model_ema"}
OFFICIAL_NOTE = ("features: mean of the patch tokens, then LayerNorm without affine: data2vec's own linear "
                 "probe (modeling_finetune use_mean_pooling, linear_classifier fc_norm); the checkpoint's norm.*, "
                 "which its fine-tuning never loads, is dropped")
HF_NOTES = {
    "tokens": "features: transformers' layernorm on every token, then pooled (use_mean_pooling: false)",
    "pooled": "features: mean of the patch tokens, then pooler.layernorm, as pooler_output (use_mean_pooling: true)",
    "none": "features: the saved model has no final norm (use_mean_pooling: true, no pooling layer): raw block "
            "outputs, pooled",
}


# -- official data2vec_vision checkpoints ----------------------------------------------------------------
def _has_regression_head(state_dict: Mapping[str, Any]) -> bool:
    head = state_dict.get("lm_head.weight")
    return isinstance(head, torch.Tensor) and head.ndim == 2 and head.shape[0] == head.shape[1]


def detect_data2vec(obj: Any) -> bool:
    model = obj.get("model") if isinstance(obj, Mapping) else None
    return isinstance(model, Mapping) and is_beit_style(model) and _has_regression_head(model)


def convert_data2vec(obj: Mapping[str, Any], branch: str | None):
    from ijepa_eval.encoders.beit import drop_position_indices
    from ijepa_eval.encoders.formats import Converted, _no_branch, _pick_branch, scalar_meta, strip_prefix

    branches = {b: k for b, k in OFFICIAL_BRANCHES.items() if isinstance(obj.get(k), Mapping)}
    if len(branches) > 1:
        branch = _pick_branch(branch, branches, "student", "data2vec")
        state_dict = obj[branches[branch]]
    else:
        _no_branch(branch, "data2vec checkpoint without model_ema")
        state_dict = obj["model"]
    state_dict = drop_position_indices(strip_prefix(state_dict, "module."))
    dropped = sorted(k for k in state_dict if k.startswith(("lm_head.", "mask_token", "norm.")))
    encoder = {k: v for k, v in state_dict.items() if k not in dropped}
    dim = encoder["patch_embed.proj.weight"].shape[0]  # unit affine = LayerNorm(elementwise_affine=False)
    encoder.update({"fc_norm.weight": torch.ones(dim), "fc_norm.bias": torch.zeros(dim)})
    return Converted(
        encoder, branch, list(branches) if branch else [], dropped,
        scalar_meta(obj, {"model", "model_ema", "optimizer"}), family="beit", notes=[OFFICIAL_NOTE],
    )


# -- transformers folders ----------------------------------------------------------------------------------
def detect_hf_data2vec(obj: Any) -> bool:
    return isinstance(obj, HFFolder) and obj.config.get("model_type") == "data2vec-vision"


# transformers names -> timm Beit names (query/key/value are fused separately)
_RENAMES = (
    (r"embeddings\.cls_token", "cls_token"),
    (r"embeddings\.position_embeddings", "pos_embed"),
    (r"embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
    (r"encoder\.relative_position_bias\.", "rel_pos_bias."),
    (r"encoder\.layer\.(\d+)\.attention\.attention\.relative_position_bias\.", r"blocks.\1.attn."),
    (r"encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"blocks.\1.attn.proj."),
    (r"encoder\.layer\.(\d+)\.layernorm_before\.", r"blocks.\1.norm1."),
    (r"encoder\.layer\.(\d+)\.layernorm_after\.", r"blocks.\1.norm2."),
    (r"encoder\.layer\.(\d+)\.intermediate\.dense\.", r"blocks.\1.mlp.fc1."),
    (r"encoder\.layer\.(\d+)\.output\.dense\.", r"blocks.\1.mlp.fc2."),
    (r"encoder\.layer\.(\d+)\.lambda_(\d)", r"blocks.\1.gamma_\2"),
    (r"layernorm\.", "norm."),
    (r"pooler\.layernorm\.", "fc_norm."),
)
_QKV = re.compile(r"encoder\.layer\.(\d+)\.attention\.attention\.(query|key|value)\.(weight|bias)")


def _rename(key: str) -> str | None:
    for pattern, target in _RENAMES:
        new, n = re.subn(f"^{pattern}", target, key)
        if n:
            return new
    return None


def hf_to_timm(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(timm Beit state dict, keys left out: heads, decoders, mask token, position index buffers)."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    dropped = []
    for key, value in state_dict.items():
        if (m := _QKV.match(key)) is not None:
            qkv.setdefault(m.group(1), {})[f"{m.group(2)}.{m.group(3)}"] = value
        elif key.endswith("relative_position_index"):
            continue  # a buffer timm recomputes
        elif (new := _rename(key)) is not None:
            out[new] = value
        else:
            dropped.append(key)
    for block, parts in qkv.items():
        out[f"blocks.{block}.attn.qkv.weight"] = torch.cat([parts["query.weight"], parts["key.weight"],
                                                           parts["value.weight"]])
        if "query.bias" in parts:
            out[f"blocks.{block}.attn.q_bias"] = parts["query.bias"]
            out[f"blocks.{block}.attn.v_bias"] = parts["value.bias"]
    return out, sorted(dropped)


def convert_hf_data2vec(folder: HFFolder, branch: str | None):
    from ijepa_eval.encoders.arch import final_norm_of_arch
    from ijepa_eval.encoders.beit import infer_beit_arch
    from ijepa_eval.encoders.formats import Converted, _no_branch

    _no_branch(branch, "transformers data2vec-vision")
    config = folder.config
    if config.get("hidden_act", "gelu") != "gelu":
        raise CheckpointError(f"'{folder.path}': hidden_act {config['hidden_act']!r} is not supported (gelu only)")
    prefixed = [k for k in folder.state_dict if k.startswith("data2vec_vision.")]
    base = {k.removeprefix("data2vec_vision."): v for k, v in folder.state_dict.items() if k in prefixed}
    others = sorted(k for k in folder.state_dict if k not in prefixed) if prefixed else []
    state_dict, dropped = hf_to_timm(base if prefixed else folder.state_dict)
    hints = {"num_heads": int(config["num_attention_heads"]), "norm_eps": float(config.get("layer_norm_eps", 1e-12)),
             "img_size": int(config.get("image_size", 224))}
    mode = final_norm_of_arch({**infer_beit_arch(state_dict).kwargs, **hints})
    meta = {k: config[k] for k in ("architectures", "transformers_version", "use_mean_pooling") if k in config}
    return Converted(state_dict, dropped_keys=sorted(others + dropped), meta=meta, family="beit", arch=hints,
                     notes=[HF_NOTES[mode]])
