"""Independent forwards for encoder tests: plain torch ops on a state dict in the official key names.

ViT blocks (qkv bias) and BEiT blocks (q/v bias, zero k bias, gamma LayerScale, relative position bias),
then the final norm wherever the model puts it. No timm, so a loader bug cannot hide in both sides.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

EPS = 1e-6


def close(a: torch.Tensor, b: torch.Tensor) -> None:
    """Equal up to float32 reordering: what a correct loader and an independent forward agree to."""
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def ln(t: torch.Tensor, sd: dict, name: str, eps: float = EPS) -> torch.Tensor:
    return F.layer_norm(t, t.shape[-1:], sd[f"{name}.weight"], sd[f"{name}.bias"], eps=eps)


def plain_ln(t: torch.Tensor) -> torch.Tensor:
    """LayerNorm(elementwise_affine=False): data2vec's linear-probe fc_norm."""
    return F.layer_norm(t, t.shape[-1:], eps=EPS)


def rel_bias(sd: dict, prefix: str, n: int) -> torch.Tensor:
    """[heads, N, N] from a BEiT table and the checkpoint's own index buffer."""
    table, index = sd[f"{prefix}relative_position_bias_table"], sd[f"{prefix}relative_position_index"]
    return table[index.reshape(-1)].reshape(n, n, -1).permute(2, 0, 1)


def raw_blocks(sd: dict, x: torch.Tensor, heads: int, eps: float = EPS) -> list[torch.Tensor]:
    """Every block's output before any final norm, by plain torch ops in the official names: ViT blocks
    (qkv bias) or BEiT blocks (q/v bias, zero k bias, gamma LayerScale, relative position bias)."""
    w = sd["patch_embed.proj.weight"]
    dim, patch = w.shape[0], w.shape[-1]
    h = F.conv2d(x, w, sd["patch_embed.proj.bias"], stride=patch).flatten(2).transpose(1, 2)
    h = torch.cat([sd["cls_token"].expand(len(x), -1, -1), h], dim=1)
    if "pos_embed" in sd:
        h = h + sd["pos_embed"]
    b_, n = len(x), h.shape[1]
    shared = rel_bias(sd, "rel_pos_bias.", n) if "rel_pos_bias.relative_position_bias_table" in sd else 0
    outs = []
    for i in range(1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))):
        b = f"blocks.{i}."
        if b + "attn.q_bias" in sd:
            bias = torch.cat([sd[b + "attn.q_bias"], torch.zeros(dim), sd[b + "attn.v_bias"]])
        else:
            bias = sd[b + "attn.qkv.bias"]
        qkv = F.linear(ln(h, sd, b + "norm1", eps), sd[b + "attn.qkv.weight"], bias)
        q, k, v = qkv.reshape(b_, n, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-2, -1)) / math.sqrt(dim // heads) + shared
        if b + "attn.relative_position_bias_table" in sd:
            attn = attn + rel_bias(sd, b + "attn.", n)
        o = F.linear((attn.softmax(-1) @ v).transpose(1, 2).reshape(b_, n, dim), sd[b + "attn.proj.weight"],
                     sd[b + "attn.proj.bias"])
        h = h + sd.get(b + "gamma_1", 1.0) * o
        y = F.gelu(F.linear(ln(h, sd, b + "norm2", eps), sd[b + "mlp.fc1.weight"], sd[b + "mlp.fc1.bias"]))
        h = h + sd.get(b + "gamma_2", 1.0) * F.linear(y, sd[b + "mlp.fc2.weight"], sd[b + "mlp.fc2.bias"])
        outs.append(h)
    return outs


def pooled(outs: list[torch.Tensor], pool: str, token_norm=None, post_norm=None) -> torch.Tensor:
    """Concatenate per block (oldest first): token_norm before pooling, or post_norm after it."""
    parts = []
    for o in outs:
        o = token_norm(o) if token_norm else o
        for name in pool.split("+"):
            v = o[:, 1:].mean(1) if name == "avg" else o[:, 0]
            parts.append(post_norm(v) if post_norm else v)
    return torch.cat(parts, dim=1)
