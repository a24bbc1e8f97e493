"""BEiT-style fine-tuned checkpoints: ``run_class_finetuning.py`` of microsoft/unilm ``beit/`` and its copy
in facebookresearch/data2vec_vision ``beit/``, saved by their ``utils.save_model`` (torch.amp runs).

``{'model', 'optimizer', 'epoch', 'scaler', 'args'[, 'model_ema']}`` during training; the released BEiT
fine-tuned weights (``beit_*_pt22k_ft22kto1k.pth``, read back with ``--resume``) hold ``{'model': ...}``.
``model`` is ``modeling_finetune.VisionTransformer``: q/v biases, ``gamma_1``/``gamma_2``, relative
position tables (per block, or shared ``rel_pos_bias``), an optional absolute ``pos_embed``, and the
classifier ``head`` (dropped, as is data2vec's ``mask_token``). The features follow the model's own path,
which its weights show: with ``use_mean_pooling`` (the default) the mean of the patch tokens, then
``fc_norm`` (``norm`` is Identity, so not saved); with ``--use_cls`` ``norm`` on every token, then the cls
token. data2vec's ``--linear_classifier`` makes ``fc_norm`` a LayerNorm without affine, which saves no
weights: the saved ``args`` say so, and a unit-affine ``fc_norm`` stands in. data2vec's
``--learn_layer_weights`` mixes every block's pooled output with learned weights, which ``forward_features``
does not compute: refused. DeepSpeed runs (``--enable_deepspeed``) write ``mp_rank_00_model_states.pt``,
a different layout, not read here. ``model_ema`` (``--model_ema``) is not read: the runs evaluate ``model``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ijepa_eval.encoders.formats.base import (
    Converted,
    beit_final_norm,
    drop_position_indices,
    is_beit_style,
    mapping_at,
    no_branch,
    scalar_meta,
    with_affine_free_fc_norm,
)
from ijepa_eval.errors import CheckpointError

NOTES = {
    "pooled": "features: mean of the patch tokens, then fc_norm: the fine-tuned model's own path "
              "(modeling_finetune use_mean_pooling); the classifier head is dropped",
    "tokens": "features: norm on every token, then pooled; pool 'cls' is the fine-tuned model's own path (--use_cls)",
    "none": "features: no final norm in the weights (--remove_final_norm): block outputs pooled as they are",
}
AFFINE_FREE_NOTE = ("features: mean of the patch tokens, then LayerNorm without affine: the model's own path "
                    "(data2vec run_class_finetuning.py --linear_classifier); the classifier head is dropped")


def detect(obj: Any) -> bool:
    """BEiT-style ``model`` with a classifier ``head`` (no pretraining ``lm_head``, no CAE ``encoder.*``)."""
    model = mapping_at(obj, "model")
    return (model is not None and is_beit_style(model) and "patch_embed.proj.weight" in model
            and "head.weight" in model and "lm_head.weight" not in model)


def convert(obj: Mapping[str, Any], branch: str | None) -> Converted:
    no_branch(branch, "BEiT-style fine-tuned")
    state_dict = drop_position_indices(obj["model"])
    if "layer_log_weights" in state_dict:
        raise CheckpointError("this data2vec model was fine-tuned with --learn_layer_weights: its features mix every "
                              "block's pooled output with learned weights, which load_encoder does not compute; "
                              "evaluate the pretraining checkpoint instead")
    args = obj.get("args")
    affine_free = (getattr(args, "linear_classifier", False) and getattr(args, "use_mean_pooling", True)
                   and not getattr(args, "remove_final_norm", False) and "fc_norm.weight" not in state_dict)
    if affine_free:
        state_dict = with_affine_free_fc_norm(state_dict)
    note = AFFINE_FREE_NOTE if affine_free else NOTES[beit_final_norm(state_dict)]
    return Converted(state_dict, meta=scalar_meta(obj, {"model", "model_ema", "optimizer"}), family="beit",
                     notes=[note])
