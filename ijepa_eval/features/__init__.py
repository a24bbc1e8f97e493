"""Frozen features: extraction by dataset index into a shared, resumable, content-keyed cache.

    from ijepa_eval.features import get_features
    fs = get_features(encoder, dataset)            # extracted once, then served from the cache
    x = fs.representation("concatPOOL4")           # float32 [N, 4 * D]; fs.labels int64 [N]
"""

from __future__ import annotations

from ijepa_eval.lazy import lazy_exports

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
    "cache_entry_for": "planning",
    "get_features": "extract",
    "tokens_bytes": "extract",
    "device_batches": "encoding",
    "encode": "encoding",
    "lent_encoder": "encoding",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
