"""Every checkpoint format, in one table: the only module that imports all format modules.

Each ``convert`` turns what the read stage returned into one network's timm-named state dict plus what it
left out. Exactly one detector must match; zero or several is an error, never a guess. A new format is a
new module under ``formats/`` and one line here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ijepa_eval.encoders.formats import (
    beit,
    cae,
    data2vec,
    dino,
    dinov2,
    ijepa,
    mae,
    msn,
    timm_weights,
    transformers,
)
from ijepa_eval.encoders.formats.base import Format
from ijepa_eval.encoders.read import HFFolder
from ijepa_eval.errors import CheckpointError

FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("ijepa", "I-JEPA training checkpoint (encoder, target_encoder, predictor, opt, ...)",
               ijepa.detect, ijepa.convert),
        Format("dino", "DINO training checkpoint (student, teacher, dino_loss, ...)", dino.detect_dino, dino.convert),
        Format("ibot", "iBOT training checkpoint (student, teacher, ibot_loss, ...)", dino.detect_ibot, dino.convert),
        Format("mae", "MAE training checkpoint ({'model'} with decoder_* keys)", mae.detect_mae, mae.convert),
        Format("wrapped", "{'model': state_dict} or {'state_dict': state_dict} (MAE/iBOT releases, DeiT)",
               mae.detect_wrapped, mae.convert),
        Format("state_dict", "plain timm-named state dict (bare encoder, DINO backbone, safetensors)",
               timm_weights.detect_state_dict, timm_weights.convert_state_dict),
        Format("msn", "MSN training checkpoint (encoder, target_encoder, prototypes, ...)", msn.detect, msn.convert),
        Format("data2vec", "data2vec vision checkpoint (BEiT-style {'model', 'model_ema'} with a D x D lm_head)",
               data2vec.detect, data2vec.convert),
        Format("hf-data2vec-vision", "transformers Data2VecVision* folder (config.json + safetensors/bin)",
               transformers.detect_beit, transformers.convert_beit),
        Format("cae", "CAE training checkpoint ({'model'} with encoder.* and pretext_neck.*)", cae.detect, cae.convert),
        Format("hf", "transformers save_pretrained folder or hf-hub:<org>/<name> (config.json + weights)",
               transformers.detect, transformers.convert),
        Format("timm-hub", "timm hub folder or hf-hub:timm/<model> (config.json with architecture, timm names)",
               timm_weights.detect_hub, timm_weights.convert_hub),
        Format("dinov2", "DINOv2 release (facebookresearch/dinov2 *_pretrain.pth: mask_token, ls1.gamma, ...)",
               dinov2.detect, dinov2.convert),
        Format("beit", "BEiT-style fine-tuned checkpoint ({'model'} with q/v biases and a classifier head: BEiT, "
               "data2vec run_class_finetuning.py)", beit.detect, beit.convert),
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
    elif isinstance(obj, HFFolder):
        what = f"a transformers folder of model_type '{obj.config.get('model_type')}'"
    else:
        what = f"a {type(obj).__name__}"
    raise CheckpointError(
        f"'{source}' holds {what}, which matches no known checkpoint format "
        f"({', '.join(FORMATS)}); save the encoder's state_dict (timm names) instead"
    )
