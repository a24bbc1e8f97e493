"""I-JEPA networks: a timm ViT as context/target encoder, a narrow ViT predictor, and the loss.

Parameter names equal the official ones (``pos_embed``, ``patch_embed.proj``, ``blocks.{i}.*``, ``norm``;
``mask_token``, ``predictor_pos_embed``, ``predictor_embed``, ``predictor_blocks.{i}.*``,
``predictor_norm``, ``predictor_proj``), so a state dict prefixed with ``module.`` is an official checkpoint.

Masks follow the official layout: a list of LongTensors [B, K] of patch indices. Gathering with several
masks concatenates along the batch, mask-major: row ``m * B + b`` is mask ``m`` of image ``b``.
"""

from __future__ import annotations

import copy
from functools import partial
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block, VisionTransformer
from torch import nn

from ijepa_eval.errors import ConfigError

LayerNorm = partial(nn.LayerNorm, eps=1e-6)

# Widths of the official/paper models (DESIGN §4); heads cannot be read from weights.
VIT_SIZES: dict[str, dict[str, int]] = {
    "vit_tiny": {"embed_dim": 192, "depth": 12, "num_heads": 3},
    "vit_small": {"embed_dim": 384, "depth": 12, "num_heads": 6},
    "vit_base": {"embed_dim": 768, "depth": 12, "num_heads": 12},
    "vit_large": {"embed_dim": 1024, "depth": 24, "num_heads": 16},
    "vit_huge": {"embed_dim": 1280, "depth": 32, "num_heads": 16},
    "vit_giant": {"embed_dim": 1408, "depth": 40, "num_heads": 16, "mlp_ratio": 48 / 11},  # MLP 6144
}


def sincos_pos_embed_2d(dim: int, grid_h: int, grid_w: int) -> torch.Tensor:
    """Fixed 2-D sin-cos position embedding [grid_h * grid_w, dim], row-major over patches.

    Same values as the official ``get_2d_sincos_pos_embed`` (first half of the channels encodes the
    column, second half the row; sin then cos within each half).
    """
    if dim % 4:
        raise ConfigError(f"embedding dim {dim} must be divisible by 4 for a 2-D sin-cos position embedding")
    omega = 1.0 / 10000 ** (np.arange(dim // 4, dtype=np.float64) / (dim / 4))

    def encode(pos: np.ndarray) -> np.ndarray:
        out = np.outer(pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    cols, rows = np.meshgrid(np.arange(grid_w, dtype=np.float64), np.arange(grid_h, dtype=np.float64))
    return torch.from_numpy(np.concatenate([encode(cols), encode(rows)], axis=1)).float()


def apply_masks(x: torch.Tensor, masks: list[torch.Tensor]) -> torch.Tensor:
    """Gather tokens [B, N, D] by each mask [B, K]; concatenate the results mask-major -> [M*B, K, D]."""
    return torch.cat([x.gather(1, m.unsqueeze(-1).expand(-1, -1, x.size(-1))) for m in masks], dim=0)


def _trunc_normal_init(module: nn.Module) -> None:
    # The official helper re-initialises every Linear after the models' own init (which also undoes their
    # depth rescaling), so the effective init is: trunc-normal(0.02) weights, zero bias; LN = identity.
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class JEPAViT(VisionTransformer):
    """timm ViT whose ``forward(imgs, masks)`` is the I-JEPA encoder pass (official ``VisionTransformer``).

    Patch embed + pos embed, keep only the masked tokens (if masks are given), then blocks and the final
    norm; returns tokens [len(masks) * B, K, D]. Everything else (state dict, ``forward_features``,
    ``forward_intermediates``) is plain timm.
    """

    def forward(self, imgs: torch.Tensor, masks: list[torch.Tensor] | None = None) -> torch.Tensor:
        x = self.patch_embed(imgs) + self.pos_embed
        if masks is not None:
            x = apply_masks(x, masks)
        return self.norm(self.blocks(x))


def build_encoder(
    img_size: int, patch_size: int, embed_dim: int, depth: int, num_heads: int, mlp_ratio: float = 4.0
) -> JEPAViT:
    """A timm ViT in the official I-JEPA layout: no cls token, fixed sin-cos ``pos_embed``, avg pool."""
    vit = JEPAViT(
        img_size=img_size,
        patch_size=patch_size,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        mlp_ratio=mlp_ratio,
        qkv_bias=True,
        class_token=False,
        global_pool="avg",
        fc_norm=False,  # keep the final `norm` (timm would move it to fc_norm for avg pooling)
        num_classes=0,
        norm_layer=LayerNorm,
    )
    _trunc_normal_init(vit)
    grid_h, grid_w = vit.patch_embed.grid_size
    vit.pos_embed.data.copy_(sincos_pos_embed_2d(embed_dim, grid_h, grid_w).unsqueeze(0))
    vit.pos_embed.requires_grad_(False)  # a frozen nn.Parameter, as in the official model
    return vit


class Predictor(nn.Module):
    """Narrow ViT that maps context tokens + positional mask tokens to predicted target features."""

    def __init__(
        self,
        num_patches_hw: tuple[int, int],
        embed_dim: int,
        predictor_embed_dim: int = 384,
        depth: int = 6,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
    ):
        super().__init__()
        self.predictor_embed = nn.Linear(embed_dim, predictor_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, predictor_embed_dim))
        pos = sincos_pos_embed_2d(predictor_embed_dim, *num_patches_hw).unsqueeze(0)
        self.predictor_pos_embed = nn.Parameter(pos, requires_grad=False)
        self.predictor_blocks = nn.ModuleList(
            Block(predictor_embed_dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=True, norm_layer=LayerNorm)
            for _ in range(depth)
        )
        self.predictor_norm = LayerNorm(predictor_embed_dim)
        self.predictor_proj = nn.Linear(predictor_embed_dim, embed_dim)
        _trunc_normal_init(self)
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    def forward(
        self, ctx: torch.Tensor, masks_enc: list[torch.Tensor], masks_pred: list[torch.Tensor]
    ) -> torch.Tensor:
        """ctx [nenc*B, Nc, D] -> predictions [npred*nenc*B, K, D], row (p*nenc + e)*B + b."""
        batch = ctx.size(0) // len(masks_enc)
        pos = self.predictor_pos_embed.expand(batch, -1, -1)
        x = self.predictor_embed(ctx) + apply_masks(pos, masks_enc)
        n_ctx = x.size(1)
        # One query set per target block: mask token + the target's position, paired with every context.
        queries = apply_masks(pos, masks_pred) + self.mask_token  # [npred*B, K, Dp]
        queries = queries.view(len(masks_pred), 1, batch, *queries.shape[1:])
        queries = queries.expand(-1, len(masks_enc), -1, -1, -1).flatten(0, 2)
        x = torch.cat([x.repeat(len(masks_pred), 1, 1), queries], dim=1)
        for blk in self.predictor_blocks:
            x = blk(x)
        return self.predictor_proj(self.predictor_norm(x[:, n_ctx:]))


@torch.no_grad()
def make_targets(
    target_vit: JEPAViT, imgs: torch.Tensor, masks_pred: list[torch.Tensor], nenc: int
) -> torch.Tensor:
    """Layer-normed target-encoder features of each target block, laid out like the predictor output."""
    h = target_vit(imgs)
    h = F.layer_norm(h, (h.size(-1),))
    h = apply_masks(h, masks_pred)  # [npred*B, K, D]
    batch = imgs.size(0)
    return h.view(len(masks_pred), 1, batch, *h.shape[1:]).expand(-1, nenc, -1, -1, -1).flatten(0, 2)


def jepa_loss(pred: torch.Tensor, target: torch.Tensor, kind: Literal["smooth_l1", "l2"] = "smooth_l1"):
    """Official loss is smooth L1 (beta 1, mean); the paper writes L2 (mean squared error)."""
    if kind == "smooth_l1":
        return F.smooth_l1_loss(pred.float(), target.float())
    if kind == "l2":
        return F.mse_loss(pred.float(), target.float())
    raise ConfigError(f"unknown loss '{kind}'. Available: l2, smooth_l1")


def build_ijepa(
    img_size: int,
    patch_size: int,
    embed_dim: int,
    depth: int,
    num_heads: int,
    mlp_ratio: float = 4.0,
    pred_depth: int = 6,
    pred_emb_dim: int = 384,
) -> tuple[JEPAViT, Predictor, JEPAViT]:
    """(context encoder, predictor, target encoder); the target starts as a frozen copy of the context."""
    encoder = build_encoder(img_size, patch_size, embed_dim, depth, num_heads, mlp_ratio)
    # Predictor heads = encoder heads, as in the official init_model.
    predictor = Predictor(
        encoder.patch_embed.grid_size, embed_dim, pred_emb_dim, pred_depth, num_heads, mlp_ratio
    )
    target_encoder = copy.deepcopy(encoder).requires_grad_(False)
    return encoder, predictor, target_encoder


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """target = m * target + (1 - m) * online, over all parameters (fused foreach kernels)."""
    t_params = list(target.parameters())
    o_params = [p.detach() for p in online.parameters()]
    torch._foreach_mul_(t_params, momentum)
    torch._foreach_add_(t_params, o_params, alpha=1.0 - momentum)
