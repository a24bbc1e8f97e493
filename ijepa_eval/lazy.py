"""Lazy package exports: `from ijepa_eval.features import get_features` imports torch only when used.

Every room's ``__init__`` names its exports and the module defining each; ``ijepa-eval --help`` imports the
rooms' ``commands`` modules, and must not pay for torch, pandas or timm to print a usage line.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` resolving ``name`` from ``package.<exports[name]>`` on first access."""

    def __getattr__(name: str) -> Any:
        if name in exports:
            return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
