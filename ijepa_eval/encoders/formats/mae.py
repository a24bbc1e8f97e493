"""MAE training checkpoints (facebookresearch/mae ``util/misc.py`` save_model) and ``{'model': ...}`` /
``{'state_dict': ...}`` wrappers of timm-named ViTs (MAE and iBOT releases, MAE fine-tuned, DeiT).

A training checkpoint is ``{'model', 'optimizer', 'epoch', 'scaler', 'args'}`` whose ``model`` holds the
decoder (``decoder_*``, ``mask_token``) beside the encoder; released encoders hold ``{'model': ...}``
only. MAE fine-tuned with ``global_pool`` has ``fc_norm`` and no ``norm``: it pools, then normalises.
BEiT-style wrapped weights are the ``beit``, ``data2vec`` and ``cae`` formats' business.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ijepa_eval.encoders.formats.base import (
    Converted,
    is_beit_style,
    is_tensor_dict,
    no_branch,
    scalar_meta,
    split_backbone,
    strip_prefix,
)

WRAPPER_KEYS = ("model", "state_dict")
FC_NORM_NOTE = ("fc_norm and no norm (MAE fine-tuned with global_pool, timm *_gap models): features are the mean "
                "of the patch tokens, then fc_norm, as the model's own head reads them")


def _wrapped_key(obj: Any) -> str | None:
    if not isinstance(obj, Mapping):
        return None
    keys = [k for k in WRAPPER_KEYS if is_tensor_dict(obj.get(k))]
    return keys[0] if len(keys) == 1 else None


def _has_mae_decoder(state_dict: Mapping[str, Any]) -> bool:
    return any(k.startswith("decoder_") for k in strip_prefix(state_dict, "module."))


def detect_mae(obj: Any) -> bool:
    return _wrapped_key(obj) == "model" and _has_mae_decoder(obj["model"])


def detect_wrapped(obj: Any) -> bool:
    key = _wrapped_key(obj)
    return key is not None and not _has_mae_decoder(obj[key]) and not is_beit_style(obj[key])


def convert(obj: Mapping[str, Any], branch: str | None) -> Converted:
    """Both layouts: the wrapped network, decoder and heads left to the architecture's key filter."""
    key = _wrapped_key(obj)
    no_branch(branch, f"{{'{key}': ...}}")
    state_dict, dropped = split_backbone(obj[key])
    notes = [FC_NORM_NOTE] if "fc_norm.weight" in state_dict and "norm.weight" not in state_dict else []
    return Converted(state_dict, dropped_keys=dropped, meta=scalar_meta(obj, {key, "optimizer", "model_ema"}),
                     notes=notes)
