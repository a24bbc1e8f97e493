"""Checkpoints in, frozen timm ViTs out: formats, safe loading, architecture inference, the Encoder contract.

    from ijepa_eval.encoders import load_encoder
    enc = load_encoder("IN1K-vit.h.14-300e.pth.tar")            # I-JEPA target encoder
    feats = enc.forward_features(x, n_last_blocks=4, pool="avg")
"""

from ijepa_eval.encoders.arch import HEADS_BY_WIDTH, ArchSpec, arch_of, build_vit, infer_arch
from ijepa_eval.encoders.encoder import POOLS, Encoder, encoder_from_vit, state_dict_sha256
from ijepa_eval.encoders.formats import FORMATS, detect_format
from ijepa_eval.encoders.load import EncoderCheckpoint, load_encoder, read_encoder_checkpoint

__all__ = [
    "FORMATS", "HEADS_BY_WIDTH", "POOLS", "ArchSpec", "Encoder", "EncoderCheckpoint", "arch_of", "build_vit",
    "detect_format", "encoder_from_vit", "infer_arch", "load_encoder", "read_encoder_checkpoint",
    "state_dict_sha256",
]
