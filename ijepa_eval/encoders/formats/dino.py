"""DINO and iBOT training checkpoints (facebookresearch/dino ``main_dino.py``, bytedance/ibot
``main_ibot.py`` save_dict).

``{'student', 'teacher', 'optimizer', 'epoch', 'args', 'dino_loss' | 'ibot_loss', ...}``; each network is
a MultiCropWrapper (``backbone.*`` + ``head.*``; the student under DDP with ``module.``). Both evaluate
the teacher backbone, the default here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ijepa_eval.encoders.formats.base import Converted, pick_branch, scalar_meta, split_backbone

BRANCHES = ("teacher", "student")


def detect_dino(obj: Any) -> bool:
    return isinstance(obj, Mapping) and "teacher" in obj and "student" in obj and "ibot_loss" not in obj


def detect_ibot(obj: Any) -> bool:
    return isinstance(obj, Mapping) and "teacher" in obj and "student" in obj and "ibot_loss" in obj


def convert(obj: Mapping[str, Any], branch: str | None) -> Converted:
    branch = pick_branch(branch, dict.fromkeys(BRANCHES), "teacher", "DINO/iBOT")
    state_dict, dropped = split_backbone(obj[branch])
    skip = {"teacher", "student", "optimizer", "dino_loss", "ibot_loss", "decoder"}
    return Converted(state_dict, branch, list(BRANCHES), dropped, scalar_meta(obj, skip))
