"""Where image batches meet the frozen encoder: device placement, memory format and precision, in one place.

Extraction into the cache, the augmented linear probe and the attentive probes all encode through here,
so a change to how batches reach the encoder (another precision, batches normalised on the device) reaches
every path at once. On CUDA the encoder runs under bf16 autocast in channels-last layout (the patch
embedding's convolution is faster in NHWC; attention goes through SDPA, timm's fused path); on CPU in float32.
"""

from __future__ import annotations

from typing import Any

import torch


def prepare_encoder(encoder: Any, device: torch.device) -> Any:
    """The encoder on ``device``, channels-last on CUDA."""
    encoder.to(device)
    if device.type == "cuda":
        encoder.to(memory_format=torch.channels_last)
    return encoder


def encode(encoder: Any, images: torch.Tensor, device: torch.device, *, tokens: bool = False,
           n_last_blocks: int = 1, inference: bool = True) -> Any:
    """``encoder.forward_pooled`` ({pool: [B, n, D]}) or, with ``tokens``, ``forward_tokens`` ([B, N, D]) of
    one batch. ``inference=False`` runs under ``no_grad`` instead of ``inference_mode``: the outputs then feed
    heads that are trained on them (autograd cannot save inference tensors for backward)."""
    cuda = device.type == "cuda"
    images = images.to(device, non_blocking=True)
    if cuda:
        images = images.contiguous(memory_format=torch.channels_last)
    with (torch.inference_mode() if inference else torch.no_grad()), torch.autocast("cuda", torch.bfloat16,
                                                                                    enabled=cuda):
        return encoder.forward_tokens(images) if tokens else encoder.forward_pooled(images, n_last_blocks)
