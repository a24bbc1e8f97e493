"""ijepa-eval: the I-JEPA paper's frozen-feature protocols for any ViT checkpoint.

    import ijepa_eval
    enc = ijepa_eval.load_encoder("IN1K-vit.h.14-300e.pth.tar")        # EMA target encoder by default
    feats = enc.forward_features(images, n_last_blocks=4, pool="avg")   # [B, 4 * 1280]
"""

from __future__ import annotations

from ijepa_eval.lazy import lazy_exports

__version__ = "0.1.0"
__all__ = ["Encoder", "load_encoder", "__version__"]
# lazy so that `ijepa-eval --help` and the error module do not import torch
__getattr__ = lazy_exports(__name__, {"Encoder": "encoders", "load_encoder": "encoders"})
