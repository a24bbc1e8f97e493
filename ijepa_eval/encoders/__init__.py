"""Checkpoints in, frozen timm ViTs out: safe reading, formats, architecture inference, build, the Encoder.

The pipeline, each stage importing only those before it: ``read`` -> ``formats/`` (one module per family,
on ``formats/base``) -> ``registry`` (the table of formats) -> ``architecture/`` -> ``build`` -> ``encoder``;
``load.load_encoder`` runs them in that order, ``commands`` is `ijepa-eval inspect` and the shared flags.

    from ijepa_eval.encoders import load_encoder
    enc = load_encoder("IN1K-vit.h.14-300e.pth.tar")            # I-JEPA target encoder
    feats = enc.forward_features(x, n_last_blocks=4, pool="avg")

Names resolve lazily so that importing ``ijepa_eval.encoders.commands`` (for `ijepa-eval --help`) does not
import torch.
"""

from __future__ import annotations

from ijepa_eval.lazy import lazy_exports

_EXPORTS = {
    "ArchSpec": "architecture.base", "HEADS_BY_WIDTH": "architecture.base", "infer_arch": "architecture.vit",
    "arch_of": "architecture.families", "build_vit": "build",
    "POOLS": "encoder", "Encoder": "encoder", "encoder_from_vit": "encoder", "state_dict_sha256": "encoder",
    "FORMATS": "registry", "detect_format": "registry",
    "EncoderCheckpoint": "load", "load_encoder": "load", "read_encoder_checkpoint": "load",
    "add_checkpoint_args": "commands", "encoder_from_args": "commands",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
