"""Checkpoints in, frozen timm ViTs out: formats, safe loading, architecture inference, the Encoder contract.

    from ijepa_eval.encoders import load_encoder
    enc = load_encoder("IN1K-vit.h.14-300e.pth.tar")            # I-JEPA target encoder
    feats = enc.forward_features(x, n_last_blocks=4, pool="avg")

Names resolve lazily so that importing ``ijepa_eval.encoders.commands`` (for `ijepa-eval --help`) does not
import torch.
"""

from __future__ import annotations

from ijepa_eval.lazy import lazy_exports

_EXPORTS = {
    "ArchSpec": "arch", "HEADS_BY_WIDTH": "arch", "arch_of": "arch", "build_vit": "arch", "infer_arch": "arch",
    "POOLS": "encoder", "Encoder": "encoder", "encoder_from_vit": "encoder", "state_dict_sha256": "encoder",
    "FORMATS": "formats", "detect_format": "formats",
    "EncoderCheckpoint": "load", "load_encoder": "load", "read_encoder_checkpoint": "load",
    "add_checkpoint_args": "commands", "encoder_from_args": "commands",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
