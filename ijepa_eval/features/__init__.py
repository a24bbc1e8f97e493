"""Frozen features: extraction by dataset index into a shared, resumable, content-keyed cache.

    from ijepa_eval.features import get_features
    fs = get_features(encoder, dataset)            # extracted once, then served from the cache
    x = fs.representation("concatPOOL4")           # float32 [N, 4 * D]; fs.labels int64 [N]
"""

from ijepa_eval.features.cache import CACHE_ENV, FEATURE_CODE_VERSION, CacheEntry, default_cache_dir
from ijepa_eval.features.extract import get_features
from ijepa_eval.features.featureset import FeatureSet, available_representations, parse_representation

__all__ = [
    "CACHE_ENV",
    "FEATURE_CODE_VERSION",
    "CacheEntry",
    "FeatureSet",
    "available_representations",
    "default_cache_dir",
    "get_features",
    "parse_representation",
]
