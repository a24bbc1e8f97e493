"""Range checks for config values, run before any extraction or training starts (issue 11, point 3).

Types are checked where configs are parsed (recipes, pretraining overrides); this module checks what a type
cannot say: ``epochs=-1``, a zero batch, a fraction outside (0, 1), an empty head grid. Rules are data —
``{"epochs": ">=1", "grid.wds": "each>=0"}`` — so each config lists its limits in one place.
"""

from __future__ import annotations

import argparse
import math
import operator
from collections.abc import Mapping
from typing import Any

from ijepa_eval.errors import ConfigError

_COMPARE = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}
_INTERVALS = {"(0,1)": (operator.gt, operator.lt), "(0,1]": (operator.gt, operator.le),
              "[0,1]": (operator.ge, operator.le), "[0,1)": (operator.ge, operator.lt)}


def _ok(value: Any, rule: str) -> bool:
    if rule == "nonempty":
        return bool(value)
    if rule.startswith("each"):
        return bool(value) and all(_ok(v, rule[4:]) for v in value)
    if value is None:  # optional fields (e.g. knn.shots) mean "off"
        return True
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return False
    if rule in _INTERVALS:
        low, high = _INTERVALS[rule]
        return low(value, 0) and high(value, 1)
    for symbol in (">=", "<=", ">", "<"):
        if rule.startswith(symbol):
            return _COMPARE[symbol](value, float(rule[len(symbol):]))
    raise ValueError(f"unknown rule {rule!r}")  # a programming error in a rules table


def _get(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = obj[part] if isinstance(obj, Mapping) else getattr(obj, part)
    return obj


def check_ranges(obj: Any, rules: Mapping[str, str], where: str) -> None:
    """ConfigError naming the first value of ``obj`` (dataclass or mapping) that breaks its rule."""
    for key, rule in rules.items():
        value = _get(obj, key)
        if not _ok(value, rule):
            wanted = ("a non-empty list" if rule == "nonempty" else
                      f"a non-empty list with every item {rule[4:]}" if rule.startswith("each") else rule)
            raise ConfigError(f"{where}: {key}={value!r} is out of range; it must be {wanted}")


def int_at_least(minimum: int):
    """argparse ``type=`` for integer flags with a lower bound (``--steps``, ``--batch-size``, ``--workers``)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is out of range; it must be >= {minimum}")
        return value

    parse.__name__ = f"int>={minimum}"
    return parse
