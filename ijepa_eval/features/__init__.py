"""Frozen features: extraction by dataset index into a shared, resumable, content-keyed cache.

    from ijepa_eval.features import get_features
    fs = get_features(encoder, dataset)            # extracted once, then served from the cache
    x = fs.representation("concatPOOL4")           # float32 [N, 4 * D]; fs.labels int64 [N]
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> defining module; imported on first use so `ijepa-eval --help` (which imports commands) stays fast
_EXPORTS = {
    "CACHE_ENV": "cache",
    "FEATURE_CODE_VERSION": "cache",
    "CacheEntry": "cache",
    "default_cache_dir": "cache",
    "iter_entries": "cache",
    "remove_entries": "cache",
    "FeatureSet": "featureset",
    "available_representations": "featureset",
    "parse_representation": "featureset",
    "cache_entry_for": "extract",
    "get_features": "extract",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"ijepa_eval.features.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'ijepa_eval.features' has no attribute {name!r}")
