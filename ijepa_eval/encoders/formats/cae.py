"""CAE training checkpoints (lxtGH/CAE ``furnace/utils.py`` save_model, PyTorch release).

``{'model', 'optimizer', 'epoch', 'scaler', 'args'}`` where ``model`` is the whole pretraining network with
the teacher removed: ``encoder.*`` (a BEiT-style ViT: q/v biases, LayerScale ``gamma_1``/``gamma_2``, a
fixed 2-D sin-cos ``pos_embed`` with a zero cls slot, no relative position bias), ``pretext_neck.*``
(regressor and decoder), ``mask_token`` and, when widths differ, ``encoder_to_decoder*``. CAE's linear
probe (``tools/run_linear.py --use_cls``) reads ``norm(x)[:, 0]``: the final norm on tokens, as here.
CAE-small has 12 heads of width 32, which no width table implies: the heads come from ``args.model``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ijepa_eval.encoders.formats.base import (
    Converted,
    drop_position_indices,
    is_beit_style,
    mapping_at,
    no_branch,
    scalar_meta,
)

# models/modeling_cae.py registry: heads per model size
HEADS_BY_MODEL = {"cae_small": 12, "cae_base": 12, "cae_large": 16}
PREFIX = "encoder."
NOTE = "features: final norm on every token, then pooled (CAE's run_linear.py --use_cls reads norm(x)[:, 0])"


def detect(obj: Any) -> bool:
    model = mapping_at(obj, "model")
    return model is not None and f"{PREFIX}patch_embed.proj.weight" in model and is_beit_style(model)


def convert(obj: Mapping[str, Any], branch: str | None) -> Converted:
    no_branch(branch, "CAE")
    model = obj["model"]
    encoder = {k[len(PREFIX):]: v for k, v in model.items() if k.startswith(PREFIX)}
    dropped = sorted(k for k in model if not k.startswith(PREFIX))
    name = str(getattr(obj.get("args"), "model", ""))
    heads = next((h for prefix, h in HEADS_BY_MODEL.items() if name.startswith(prefix)), None)
    return Converted(
        drop_position_indices(encoder), dropped_keys=dropped, meta=scalar_meta(obj, {"model", "optimizer"}),
        family="beit", arch={"num_heads": heads} if heads else {}, notes=[NOTE],
    )
