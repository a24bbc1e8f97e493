"""V-JEPA's attentive probe: one learned query cross-attends to frozen patch tokens, a linear layer reads it.

Same parameters, names, shapes, initialisation and function as ``AttentiveClassifier`` in
facebookresearch/jepa (``src/models/attentive_pooler.py`` over ``src/models/utils/modules.py``), so a probe
trained by V-JEPA's ``evals/image_classification_frozen/eval.py`` loads here and ours loads there:

- ``pooler.query_tokens`` [1, 1, D], trunc-normal std 0.02 (bounds ±2, absolute, as V-JEPA's helper);
- ``pooler.cross_attention_block``: ``norm1`` on the keys/values only (the query is not normalised),
  ``xattn.q`` [D, D], ``xattn.kv`` [2D, D] (rows: all of k, then all of v; heads are contiguous chunks of
  D/heads inside each), softmax(q kᵀ/√d) v, heads concatenated; then ``norm2`` + GELU MLP (``mlp.fc1``,
  ``mlp.fc2``, ratio 4), both residual;
- ``xattn.proj`` exists (V-JEPA's ``CrossAttention`` owns it) but its forward never applies it: jepa
  commit a0517b4 reverted adding it because the released probes were trained without it;
- init: every Linear trunc-normal 0.02 with zero bias, LayerNorms 1/0, then ``xattn.proj`` and
  ``mlp.fc2`` divided by √2 (``_rescale_blocks``, layer id 1); ``linear`` keeps torch's default init.
  The truncated normal is timm's ``trunc_normal_``: the inverse-CDF draw V-JEPA's helper makes (torch ≥ 2.14's
  own ``nn.init.trunc_normal_`` samples by rejection, so the same seed would give other weights).

``variant="vjepa2"`` is V-JEPA 2's pooler (facebookresearch/vjepa2, same files): ``CrossAttention`` has
no ``proj`` at all, the ``depth - 1`` self-attention ``blocks`` run over *all tokens* before the
cross-attention (V-JEPA puts them after it, on the single query), block i's ``attn.proj``/``mlp.fc2`` are
divided by √(2(i+1)) and the cross block's ``mlp.fc2`` by √(2·max(1, depth-1)). The self-attention blocks
are timm's ``Block`` with torch's LayerNorm (eps 1e-5): the same keys, order and function as V-JEPA's.
"""

from __future__ import annotations

import math
import os
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from timm.layers import Mlp, trunc_normal_
from timm.models.vision_transformer import Block
from torch import nn

from ijepa_eval.errors import CheckpointError, ConfigError
from ijepa_eval.io import atomic_torch_save, sha256_file

Variant = Literal["vjepa", "vjepa2"]
VARIANTS: tuple[str, ...] = ("vjepa", "vjepa2")
INIT_STD = 0.02
PROBE_SUFFIX = ".vjepa_probe.pth"  # beside a result JSON, as its predictions and a linear result's head file
PROBE_FORMAT = "vjepa-checkpoint-pth"  # a result's probe_file.format: ``vjepa_checkpoint``'s layout, torch.save


class CrossAttention(nn.Module):
    """Queries [B, n, D] attend to tokens [B, N, D]; V-JEPA's ``proj`` is held (vjepa) but not applied."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, with_proj: bool):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim) if with_proj else None  # V-JEPA's: held for its keys, never applied

    def forward(self, q: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        b, n, c = q.shape
        h = self.num_heads
        q = self.q(q).reshape(b, n, h, c // h).transpose(1, 2)
        k, v = self.kv(x).reshape(b, x.shape[1], 2, h, c // h).permute(2, 0, 3, 1, 4)
        return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c)


class CrossAttentionBlock(nn.Module):
    """q + xattn(q, norm1(x)), then + mlp(norm2(q)): only the tokens are normalised before attention."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, with_proj: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.xattn = CrossAttention(dim, num_heads, qkv_bias, with_proj)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU)

    def forward(self, q: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        q = q + self.xattn(q, self.norm1(x))
        return q + self.mlp(self.norm2(q))


class AttentivePooler(nn.Module):
    """One learned query pooled over the tokens; parameters registered in V-JEPA's order (its init draws
    random numbers in that order, so the same seed gives the same weights)."""

    def __init__(self, dim: int, num_heads: int, depth: int, mlp_ratio: float, qkv_bias: bool, variant: Variant):
        super().__init__()
        self.variant = variant
        self.query_tokens = nn.Parameter(torch.zeros(1, 1, dim))
        self.cross_attention_block = CrossAttentionBlock(dim, num_heads, mlp_ratio, qkv_bias, variant == "vjepa")
        self.blocks = nn.ModuleList(
            Block(dim, num_heads, mlp_ratio, qkv_bias=qkv_bias, norm_layer=nn.LayerNorm) for _ in range(depth - 1)
        ) if depth > 1 else None
        trunc_normal_(self.query_tokens, std=INIT_STD, a=-2.0, b=2.0)
        self.apply(_init_weights)
        self._rescale()

    @torch.no_grad()
    def _rescale(self) -> None:
        """V-JEPA's ``_rescale_blocks``: residual-branch outputs divided by √(2 · layer id)."""
        blocks = list(self.blocks or [])
        cross = self.cross_attention_block
        if self.variant == "vjepa":
            cross.xattn.proj.weight.div_(math.sqrt(2.0))
            cross.mlp.fc2.weight.div_(math.sqrt(2.0))
            ids = range(2, len(blocks) + 2)
        else:
            cross.mlp.fc2.weight.div_(math.sqrt(2.0 * max(1, len(blocks))))
            ids = range(1, len(blocks) + 1)
        for layer_id, block in zip(ids, blocks, strict=True):
            block.attn.proj.weight.div_(math.sqrt(2.0 * layer_id))
            block.mlp.fc2.weight.div_(math.sqrt(2.0 * layer_id))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blocks = list(self.blocks or [])
        if self.variant == "vjepa2":
            for block in blocks:
                x = block(x)
        q = self.cross_attention_block(self.query_tokens.expand(len(x), -1, -1), x)
        if self.variant == "vjepa":
            for block in blocks:
                q = block(q)
        return q


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=INIT_STD, a=-2.0, b=2.0)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


class AttentiveClassifier(nn.Module):
    """``forward(tokens [B, N, D]) -> logits [B, num_classes]``; ``num_heads`` is the encoder's."""

    def __init__(self, embed_dim: int, num_heads: int, num_classes: int, depth: int = 1, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, variant: Variant = "vjepa"):
        super().__init__()
        if variant not in VARIANTS:
            raise ConfigError(f"unknown attentive probe variant '{variant}'; available: {', '.join(VARIANTS)}")
        if embed_dim < 1 or num_heads < 1 or embed_dim % num_heads:
            raise ConfigError(f"embed_dim {embed_dim} does not split into {num_heads} heads; give the encoder's "
                              "number of heads (attentive.num_heads)")
        if depth < 1 or num_classes < 1:
            raise ConfigError(f"attentive probe needs depth >= 1 and num_classes >= 1 (got {depth}, {num_classes})")
        self.config = {"embed_dim": embed_dim, "num_heads": num_heads, "num_classes": num_classes, "depth": depth,
                       "mlp_ratio": mlp_ratio, "qkv_bias": qkv_bias, "variant": variant}
        self.pooler = AttentivePooler(embed_dim, num_heads, depth, mlp_ratio, qkv_bias, variant)
        self.linear = nn.Linear(embed_dim, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.linear(self.pooler(tokens).squeeze(1))


# -- V-JEPA checkpoints -------------------------------------------------------------------------------------

def strip_module(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys of a DDP-wrapped state dict (V-JEPA saves ``classifier.state_dict()`` of the DDP module)."""
    return {k.removeprefix("module."): v for k, v in state.items()}


def probe_config(state: Mapping[str, torch.Tensor], num_heads: int) -> dict[str, Any]:
    """AttentiveClassifier arguments read off a state dict (heads cannot be read from weights)."""
    state = strip_module(state)
    for key in ("pooler.query_tokens", "pooler.cross_attention_block.mlp.fc1.weight", "linear.weight"):
        if key not in state:
            raise CheckpointError(f"not an attentive probe state dict: '{key}' is missing (V-JEPA's "
                                  "AttentiveClassifier keys: pooler.*, linear.*)")
    embed_dim = state["pooler.query_tokens"].shape[-1]
    blocks = {k.split(".")[2] for k in state if k.startswith("pooler.blocks.")}
    return {"embed_dim": embed_dim, "num_heads": num_heads, "num_classes": state["linear.weight"].shape[0],
            "depth": len(blocks) + 1,
            "mlp_ratio": state["pooler.cross_attention_block.mlp.fc1.weight"].shape[0] / embed_dim,
            "qkv_bias": "pooler.cross_attention_block.xattn.q.bias" in state,
            # V-JEPA's CrossAttention always owns proj, V-JEPA 2's never does: the keys tell them apart
            "variant": "vjepa" if "pooler.cross_attention_block.xattn.proj.weight" in state else "vjepa2"}


def load_vjepa_probes(blob: Mapping[str, Any], num_heads: int) -> list[AttentiveClassifier]:
    """The probes of a V-JEPA eval checkpoint (``classifier``), a V-JEPA 2 one (``classifiers``, one per
    grid member) or a bare state dict; ``module.`` prefixes stripped, loaded strictly."""
    if "classifiers" in blob:
        states = list(blob["classifiers"])
    elif "classifier" in blob:
        states = [blob["classifier"]]
    else:
        states = [blob]
    probes = []
    for state in states:
        state = strip_module(state)
        probe = AttentiveClassifier(**probe_config(state, num_heads))
        missing, unexpected = probe.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise CheckpointError(f"attentive probe keys do not match V-JEPA's layout (missing {sorted(missing)[:3]}, "
                                  f"unexpected {sorted(unexpected)[:3]}); is it a V-JEPA AttentiveClassifier?")
        probes.append(probe)
    return probes


def vjepa_checkpoint(probes: Sequence[AttentiveClassifier], *, epoch: int, batch_size: int, world_size: int = 1,
                     lr: float | None = None, optimizers: Sequence[Mapping[str, Any]] | None = None,
                     scalers: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """A dict laid out as the eval ``save_checkpoint`` of V-JEPA (one ``vjepa`` probe: ``classifier``,
    ``opt``, ``scaler``) or of V-JEPA 2 (``classifiers``, ``opt``, ``scaler`` as lists), keys with the DDP
    ``module.`` prefix, so its ``load_checkpoint`` restores our probes (and AdamW states: same param groups)."""
    states = [{f"module.{k}": v.detach().cpu() for k, v in p.state_dict().items()} for p in probes]
    if len(probes) == 1 and probes[0].config["variant"] == "vjepa":
        return {"classifier": states[0], "opt": optimizers[0] if optimizers else None,
                "scaler": scalers[0] if scalers else None, "epoch": epoch, "batch_size": batch_size,
                "world_size": world_size, "lr": lr}
    return {"classifiers": states, "opt": list(optimizers or []), "scaler": list(scalers) if scalers else None,
            "epoch": epoch, "batch_size": batch_size, "world_size": world_size}


def probe_path(result_path: str | os.PathLike) -> Path:
    """``x__y__z.json`` -> ``x__y__z.vjepa_probe.pth`` (beside it)."""
    path = Path(result_path)
    return path.with_name(path.name.removesuffix(".json") + PROBE_SUFFIX)


def write_probe_file(result_path: str | os.PathLike, blob: Mapping[str, Any]) -> dict[str, str]:
    """Save a ``vjepa_checkpoint`` blob atomically beside the result JSON; returns the result's ``probe_file``
    field ({file, sha256, format}). Tensors, numbers and None only: ``torch.load(weights_only=True)`` reads it."""
    path = probe_path(result_path)
    atomic_torch_save(dict(blob), path)
    return {"file": path.name, "sha256": sha256_file(path), "format": PROBE_FORMAT}


def read_probe_file(path: str | os.PathLike, sha256: str | None = None) -> dict[str, Any]:
    """A probe file read safely; with ``sha256`` (from the result JSON) a changed file is refused. Its probes:
    ``load_vjepa_probes(blob, num_heads)``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"attentive probe file {path} is missing; re-run the result's protocol to write it")
    if sha256 is not None and sha256_file(path) != sha256:
        raise CheckpointError(f"attentive probe file {path} does not match the sha256 its result records; it was "
                              "changed after the run: restore it or re-run the protocol")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError) as err:
        raise CheckpointError(f"attentive probe file {path} is unreadable ({type(err).__name__}); re-run the "
                              "protocol") from None
