"""data2vec vision pretraining checkpoints (BEiT-style; ``transformers`` Data2VecVision folders are the
``transformers`` module's, fine-tuned ``{'model'}`` checkpoints the ``beit`` module's).

Official (facebookresearch/data2vec_vision ``beit/run_cyclical.py`` + ``utils.save_model``):
``{'model', 'optimizer', 'epoch', 'scaler', 'args', 'model_ema'}``; ``model`` is the student
(``modeling_cyclical.VisionTransformerForCyclicalTraining``: shared relative position bias, LayerScale,
q/v biases, ``mask_token``, a D x D ``lm_head`` regression head), ``model_ema`` the EMA teacher. Fine-tuning
and the transformers conversion read ``model``, the default branch here. The features are data2vec's own
linear probe (``modeling_finetune`` with ``use_mean_pooling`` and ``linear_classifier``): the mean of the
patch tokens, then ``fc_norm = LayerNorm(elementwise_affine=False)``, here a unit-affine ``fc_norm``. The
checkpoint's ``norm.*`` is dropped: pretraining trains it (the student's predictions pass ``norm`` before
``lm_head``), but ``run_class_finetuning.py`` never loads it (``norm`` is Identity with mean pooling).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ijepa_eval.encoders.formats.base import (
    Converted,
    drop_position_indices,
    is_beit_style,
    mapping_at,
    no_branch,
    pick_branch,
    scalar_meta,
    strip_prefix,
    with_affine_free_fc_norm,
)

BRANCHES = {"student": "model", "teacher": "model_ema"}
NOTE = ("features: mean of the patch tokens, then LayerNorm without affine: data2vec's own linear "
        "probe (modeling_finetune use_mean_pooling, linear_classifier fc_norm); the checkpoint's norm.*, "
        "which its fine-tuning never loads, is dropped")


def _has_regression_head(state_dict: Mapping[str, Any]) -> bool:
    head = state_dict.get("lm_head.weight")
    return isinstance(head, torch.Tensor) and head.ndim == 2 and head.shape[0] == head.shape[1]


def detect(obj: Any) -> bool:
    model = mapping_at(obj, "model")
    return model is not None and is_beit_style(model) and _has_regression_head(model)


def convert(obj: Mapping[str, Any], branch: str | None) -> Converted:
    branches = {b: k for b, k in BRANCHES.items() if isinstance(obj.get(k), Mapping)}
    if len(branches) > 1:
        branch = pick_branch(branch, branches, "student", "data2vec")
        state_dict = obj[branches[branch]]
    else:
        no_branch(branch, "data2vec checkpoint without model_ema")
        state_dict = obj["model"]
    state_dict = drop_position_indices(strip_prefix(state_dict, "module."))
    dropped = sorted(k for k in state_dict if k.startswith(("lm_head.", "mask_token", "norm.")))
    encoder = with_affine_free_fc_norm({k: v for k, v in state_dict.items() if k not in dropped})
    return Converted(
        encoder, branch, list(branches) if branch else [], dropped,
        scalar_meta(obj, {"model", "model_ema", "optimizer"}), family="beit", notes=[NOTE],
    )
