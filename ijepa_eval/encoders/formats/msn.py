"""MSN training checkpoints (facebookresearch/msn ``src/msn_train.py`` save_checkpoint).

``{'encoder', 'target_encoder', 'prototypes', 'opt', 'epoch', 'loss', 'batch_size', 'world_size', 'lr',
'temperature'}``; both networks are DeiT-style ViTs (timm names, ``module.`` under DDP) with the projection
head ``fc.*`` (fc1/bn1/fc2/bn2/fc3) attached. MSN evaluates the target encoder, and its own linear and
logistic evaluations (``linear_eval.py``, ``logistic_eval.py``) read ``forward_blocks``: the class tokens of
the last blocks with no final norm. That is the default here (``final_norm: False``; ``norm.*`` is dropped
and listed); ``arch={"final_norm": True}`` puts the norm back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ijepa_eval.encoders.formats.base import Converted, pick_branch, scalar_meta, strip_prefix

BRANCHES = {"target": "target_encoder", "anchor": "encoder"}
HEAD_ROOTS = ("fc.", "pred.")
NOTE = ("features follow MSN's own evaluation (linear_eval.py / logistic_eval.py forward_blocks): block outputs "
        "without the final norm, which is dropped; --arch '{\"final_norm\": true}' applies it")


def detect(obj: Any) -> bool:
    return isinstance(obj, Mapping) and {"encoder", "target_encoder", "prototypes"} <= set(obj)


def convert(obj: Mapping[str, Any], branch: str | None) -> Converted:
    branch = pick_branch(branch, BRANCHES, "target", "MSN")
    state_dict = strip_prefix(obj[BRANCHES[branch]], "module.")
    kept = {k: v for k, v in state_dict.items() if not k.startswith(HEAD_ROOTS)}
    dropped = sorted(set(state_dict) - set(kept)) + ["prototypes"]
    meta = scalar_meta(obj, {"encoder", "target_encoder", "prototypes", "opt"})
    return Converted(kept, branch, list(BRANCHES), dropped, meta, arch={"final_norm": False}, notes=[NOTE])
