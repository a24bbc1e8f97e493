"""Stage 5 of loading: the one feature contract every checkpoint is served through (DESIGN §3), on timm's
ViT families.

Block outputs come from timm's ``forward_intermediates`` (VisionTransformer, Beit); pooling is done here so
that "avg" never includes cls/register tokens and concatenations run oldest block first. Where the final
norm sits is the model's own pooled path (``FinalNorm``):

- "tokens": a final ``norm`` on every token, then pooling (I-JEPA, MAE pretraining, DINO, iBOT, CAE);
- "pooled": pooling, then ``fc_norm`` (data2vec vision, MAE and BEiT fine-tuned with mean pooling);
- "none": no final norm at all (MSN's own evaluation reads its blocks without one).
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal, get_args

import torch
from torch import nn

from ijepa_eval.encoders.architecture.base import FinalNorm, final_norm_of
from ijepa_eval.encoders.architecture.families import arch_of
from ijepa_eval.errors import ConfigError, unknown_choice

Pool = Literal["avg", "cls", "avg+cls"]
POOLS: tuple[str, ...] = get_args(Pool)
FEATURE_PATHS = {  # what forward_features computes, as `inspect` says it
    "tokens": "final norm on every token, then pooled (avg = mean of patch tokens; cls = class token)",
    "pooled": "pooled (avg = mean of patch tokens; cls = class token), then fc_norm: the model's own pooled path",
    "none": "no final norm: block outputs pooled as they are (avg = mean of patch tokens; cls = class token)",
}


class Encoder(nn.Module):
    """A frozen timm ViT (VisionTransformer or Beit) plus where it came from (``info``); see DESIGN §3."""

    def __init__(self, vit: nn.Module, info: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.final_norm: FinalNorm = final_norm_of(vit)
        self.vit = vit.eval().requires_grad_(False)
        self.embed_dim = int(vit.embed_dim)
        self.depth = len(vit.blocks)
        self.patch_size = int(vit.patch_embed.patch_size[0])
        self.img_size = int(vit.patch_embed.img_size[0])
        self.num_patches = int(vit.patch_embed.num_patches)
        self.num_heads = int(vit.blocks[0].attn.num_heads)  # attentive probes use the encoder's (V-JEPA)
        self.num_prefix_tokens = int(vit.num_prefix_tokens)
        # Beit always has a class token and no ``has_class_token`` attribute
        self.has_class_token = bool(getattr(vit, "has_class_token", getattr(vit, "cls_token", None) is not None))
        self.info: dict[str, Any] = dict(info or {})
        self.eval()

    def extra_repr(self) -> str:
        return (f"source={self.info.get('source')!r}, branch={self.info.get('branch')!r}, "
                f"final_norm={self.final_norm!r}")

    def _check_blocks(self, n_last_blocks: int) -> None:
        if not 1 <= n_last_blocks <= self.depth:
            raise ConfigError(f"n_last_blocks must be in 1..{self.depth} for this encoder, got {n_last_blocks}")

    def forward_pooled(self, x: torch.Tensor, n_last_blocks: int = 4) -> dict[str, torch.Tensor]:
        """{"avg": [B, n, D], "cls": [B, n, D] (cls models only)}: last n blocks, oldest first, each through
        the model's final norm where it sits (on tokens before pooling, or fc_norm after)."""
        self._check_blocks(n_last_blocks)
        outputs = self.vit.forward_intermediates(
            x, indices=n_last_blocks, norm=True, output_fmt="NLC", intermediates_only=True,
            return_prefix_tokens=self.num_prefix_tokens > 0, stop_early=True,
        )
        if self.num_prefix_tokens:
            patches, prefixes = zip(*outputs, strict=True)
        else:
            patches, prefixes = outputs, ()
        # Mean in float32: bf16 sums over hundreds of tokens lose digits the probes can see.
        pooled = {"avg": torch.stack([p.float().mean(dim=1) for p in patches], dim=1)}
        if self.has_class_token:  # timm puts the class token first among prefix tokens
            pooled["cls"] = torch.stack([p[:, 0].float() for p in prefixes], dim=1)
        if self.final_norm == "pooled":  # timm's forward_head order: pool, then fc_norm
            fc_norm = self.vit.fc_norm
            pooled = {k: fc_norm(v).float() for k, v in pooled.items()}
        return pooled

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """[B, num_patches, D]: the last block's patch tokens through the final norm where it sits on tokens
        (cls/register tokens dropped). What V-JEPA's attentive probe reads: its encoders end in ``norm``."""
        return self.vit.forward_intermediates(x, indices=1, norm=True, output_fmt="NLC", intermediates_only=True,
                                              stop_early=True)[-1]

    def forward_features(self, x: torch.Tensor, n_last_blocks: int = 1, pool: Pool = "avg") -> torch.Tensor:
        """[B, n*D] for "avg"/"cls"; [B, 2*n*D] for "avg+cls" as (avg_i, cls_i) per block, oldest first.

        Either way the last columns are the n=1 result, so lastPOOL is a slice of concatPOOL4.
        """
        if pool not in POOLS:
            raise ConfigError(unknown_choice("pool", str(pool), POOLS))
        if pool != "avg" and not self.has_class_token:
            raise ConfigError(f"pool '{pool}' needs a class token, which this encoder lacks; use pool='avg'")
        pooled = self.forward_pooled(x, n_last_blocks)
        if pool == "avg+cls":
            return torch.cat([pooled["avg"], pooled["cls"]], dim=2).flatten(1)
        return pooled[pool].flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)


def encoder_from_vit(vit: nn.Module, info: dict[str, Any] | None = None) -> Encoder:
    """Wrap an in-memory timm VisionTransformer (pretraining, random-init baselines, tests)."""
    info = dict(info or {})
    info.setdefault("source", "in-memory")
    info.setdefault("format", "in-memory")
    info.setdefault("branch", None)
    info.setdefault("branches", [])
    info.setdefault("arch", arch_of(vit))
    info.setdefault("dropped_keys", [])
    info.setdefault("meta", {})
    if not info.get("sha256"):
        info["sha256"] = state_dict_sha256(vit.state_dict())
    return Encoder(vit, info)


def state_dict_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    """Content hash of in-memory weights, so caches key on what the model computes, not on a name."""
    h = hashlib.sha256()
    for key in sorted(state_dict):
        tensor = state_dict[key].detach().to("cpu").contiguous()
        h.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        h.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
