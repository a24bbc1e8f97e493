"""Closed forms of the JEPA family's schedulers, indexed by the 0-based optimisation step.

``WarmupCosineSchedule`` and ``CosineWDSchedule`` (``src/utils/schedulers.py`` in facebookresearch/ijepa
and facebookresearch/jepa; vjepa2's image eval has per-group copies with the same equations) are objects
whose ``step()`` increments a counter *before* computing, and the training loops call it before each
update. So 0-based step s trains with the value at count s + 1: the first update is already one increment
into the cosine and the last one (count T) reaches the final value. A closed form needs no replay on resume.
"""

from __future__ import annotations

import math


def warmup_cosine_lr(step: int, warmup_steps: int, total: int, start_lr: float, lr: float, final_lr: float) -> float:
    """``WarmupCosineSchedule``: linear start_lr -> lr over ``warmup_steps``, then cosine to ``final_lr``
    at ``total`` (floored at ``final_lr``)."""
    s = step + 1
    if s < warmup_steps:
        return start_lr + s / max(1, warmup_steps) * (lr - start_lr)
    progress = (s - warmup_steps) / max(1, total - warmup_steps)
    return max(final_lr, final_lr + (lr - final_lr) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def cosine_wd(step: int, total: int, wd: float, final_wd: float) -> float:
    """``CosineWDSchedule``: cosine wd -> final_wd at ``total``, clamped at ``final_wd`` on either side."""
    value = final_wd + (wd - final_wd) * 0.5 * (1.0 + math.cos(math.pi * (step + 1) / total))
    return max(final_wd, value) if final_wd <= wd else min(final_wd, value)
