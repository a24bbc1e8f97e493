"""I-JEPA training checkpoints (facebookresearch/ijepa ``src/train.py`` save_checkpoint).

``{'encoder', 'predictor', 'target_encoder', 'opt', 'scaler', 'epoch', 'loss', 'batch_size', 'world_size',
'lr'}``; the networks' keys start with ``module.`` (DDP) and are timm's. The paper evaluates the EMA
``target_encoder``, the default here; ``--branch context`` reads ``encoder``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ijepa_eval.encoders.formats.base import Converted, pick_branch, scalar_meta, strip_prefix

BRANCHES = {"target": "target_encoder", "context": "encoder"}


def detect(obj: Any) -> bool:  # MSN saves the same two keys, plus its prototypes
    return isinstance(obj, Mapping) and "target_encoder" in obj and "encoder" in obj and "prototypes" not in obj


def convert(obj: Mapping[str, Any], branch: str | None) -> Converted:
    branch = pick_branch(branch, BRANCHES, "target", "I-JEPA")
    state_dict = strip_prefix(obj[BRANCHES[branch]], "module.")
    predictor = strip_prefix(obj.get("predictor") or {}, "module.")
    skip = {"encoder", "target_encoder", "predictor", "opt"}
    return Converted(
        state_dict, branch, list(BRANCHES), sorted(f"predictor.{k}" for k in predictor), scalar_meta(obj, skip),
    )
