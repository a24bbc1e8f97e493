"""Small checkpoints written the way each original tool writes them (real key names, prefixes, extras).

Layouts follow facebookresearch/ijepa ``src/train.py`` (save_checkpoint), facebookresearch/mae
``util/misc.py`` (save_model), facebookresearch/dino ``main_dino.py`` and bytedance/ibot ``main_ibot.py``
(save_dict). Every writer returns the encoder weights it stored, in timm names, for reference computations.
Other rooms' tests may import these.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch
from timm.models.vision_transformer import VisionTransformer

TINY = dict(embed_dim=192, depth=3, num_heads=3, patch_size=16, img_size=48)
GRAD_SCALER_STATE = {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
                     "_growth_tracker": 17}


def sincos_pos_embed_2d(dim: int, side: int) -> torch.Tensor:
    """Fixed 2-D sin-cos table [side*side, dim] as in MAE/I-JEPA ``get_2d_sincos_pos_embed`` (no cls row)."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4.0))
    coords = torch.arange(side, dtype=torch.float64)
    grid_w, grid_h = torch.meshgrid(coords, coords, indexing="xy")

    def embed_1d(pos: torch.Tensor) -> torch.Tensor:
        angles = pos.reshape(-1, 1) * omega
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    return torch.cat([embed_1d(grid_w), embed_1d(grid_h)], dim=1).float()


def tiny_vit_state_dict(seed: int = 0, class_token: bool = True, reg_tokens: int = 0, **overrides) -> dict:
    """Random ViT weights in timm names; LayerNorm and biases perturbed so no layer is an identity."""
    kwargs = {**TINY, **overrides}
    torch.manual_seed(seed)
    vit = VisionTransformer(**kwargs, class_token=class_token, reg_tokens=reg_tokens, num_classes=0,
                            global_pool="")
    state = {}
    for key, value in vit.state_dict().items():
        noise = 0.1 * torch.randn_like(value)
        state[key] = value + (noise if key.endswith((".weight", ".bias")) and value.ndim == 1 else noise * 0.1)
    return state


def _adamw_state(named: dict[str, torch.Tensor]) -> dict:
    """A real AdamW state_dict after one step, as the training loops save it."""
    params = [torch.nn.Parameter(v.clone()) for v in list(named.values())[:4]]
    opt = torch.optim.AdamW(params, lr=1e-3)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    return opt.state_dict()


def _block_keys(prefix: str, dim: int, hidden: int) -> dict[str, torch.Tensor]:
    shapes = {"norm1.weight": (dim,), "norm1.bias": (dim,), "attn.qkv.weight": (3 * dim, dim),
              "attn.qkv.bias": (3 * dim,), "attn.proj.weight": (dim, dim), "attn.proj.bias": (dim,),
              "norm2.weight": (dim,), "norm2.bias": (dim,), "mlp.fc1.weight": (hidden, dim),
              "mlp.fc1.bias": (hidden,), "mlp.fc2.weight": (dim, hidden), "mlp.fc2.bias": (dim,)}
    return {f"{prefix}.{k}": 0.02 * torch.randn(s) for k, s in shapes.items()}


def ijepa_encoder_state_dict(seed: int = 0, **overrides) -> dict:
    """I-JEPA encoder: no cls token, pos_embed = fixed 2-D sin-cos [1, N, D]."""
    kwargs = {**TINY, **overrides}
    state = tiny_vit_state_dict(seed, class_token=False, **kwargs)
    side = kwargs["img_size"] // kwargs["patch_size"]
    state["pos_embed"] = sincos_pos_embed_2d(kwargs["embed_dim"], side).unsqueeze(0)
    return state


def ijepa_predictor_state_dict(embed_dim: int, num_patches: int, pred_dim: int = 96, depth: int = 2) -> dict:
    side = math.isqrt(num_patches)
    state = {
        "predictor_embed.weight": 0.02 * torch.randn(pred_dim, embed_dim), "predictor_embed.bias": torch.zeros(pred_dim),
        "mask_token": 0.02 * torch.randn(1, 1, pred_dim),
        "predictor_pos_embed": sincos_pos_embed_2d(pred_dim, side).unsqueeze(0),
        "predictor_norm.weight": torch.ones(pred_dim), "predictor_norm.bias": torch.zeros(pred_dim),
        "predictor_proj.weight": 0.02 * torch.randn(embed_dim, pred_dim), "predictor_proj.bias": torch.zeros(embed_dim),
    }
    for i in range(depth):
        state.update(_block_keys(f"predictor_blocks.{i}", pred_dim, 4 * pred_dim))
    return state


def write_ijepa_checkpoint(path: str | Path, *, ddp: bool = True, seed: int = 0, epoch: int = 3,
                           **overrides) -> dict[str, dict]:
    """Official I-JEPA training checkpoint. Returns {"target": sd, "context": sd} in timm names."""
    kwargs = {**TINY, **overrides}
    context = ijepa_encoder_state_dict(seed, **kwargs)
    target = ijepa_encoder_state_dict(seed + 1, **kwargs)
    target["pos_embed"] = context["pos_embed"].clone()  # fixed table, identical in both
    num_patches = (kwargs["img_size"] // kwargs["patch_size"]) ** 2
    predictor = ijepa_predictor_state_dict(kwargs["embed_dim"], num_patches)
    prefix = "module." if ddp else ""  # DistributedDataParallel only when world_size > 1
    save = {
        "encoder": {prefix + k: v for k, v in context.items()},
        "predictor": {prefix + k: v for k, v in predictor.items()},
        "target_encoder": {prefix + k: v for k, v in target.items()},
        "opt": _adamw_state({**context, **predictor}),
        "scaler": dict(GRAD_SCALER_STATE),
        "epoch": epoch,
        "loss": 0.4375,
        "batch_size": 128,
        "world_size": 8 if ddp else 1,
        "lr": 0.001,
    }
    torch.save(save, path)
    return {"target": target, "context": context}


def mae_args() -> argparse.Namespace:
    return argparse.Namespace(batch_size=64, epochs=800, accum_iter=1, model="mae_vit_tiny_patch16",
                              input_size=48, mask_ratio=0.75, norm_pix_loss=True, weight_decay=0.05, lr=None,
                              blr=1.5e-4, min_lr=0.0, warmup_epochs=40, data_path="/data/imagenet",
                              output_dir="./output_dir", device="cuda", seed=0, resume="", start_epoch=0,
                              num_workers=10, pin_mem=True, world_size=8, local_rank=-1, dist_on_itp=False,
                              dist_url="env://", distributed=True, rank=0, gpu=0, dist_backend="nccl")


def mae_model_state_dict(seed: int = 0, decoder_dim: int = 64, **overrides) -> tuple[dict, dict]:
    """(full MAE model state dict with decoder, encoder part in timm names)."""
    kwargs = {**TINY, **overrides}
    encoder = tiny_vit_state_dict(seed, class_token=True, **kwargs)
    side = kwargs["img_size"] // kwargs["patch_size"]
    zeros_row = torch.zeros(1, kwargs["embed_dim"])
    encoder["pos_embed"] = torch.cat([zeros_row, sincos_pos_embed_2d(kwargs["embed_dim"], side)]).unsqueeze(0)
    model = dict(encoder)
    model["mask_token"] = 0.02 * torch.randn(1, 1, decoder_dim)
    model["decoder_embed.weight"] = 0.02 * torch.randn(decoder_dim, kwargs["embed_dim"])
    model["decoder_embed.bias"] = torch.zeros(decoder_dim)
    model["decoder_pos_embed"] = torch.cat([torch.zeros(1, decoder_dim),
                                            sincos_pos_embed_2d(decoder_dim, side)]).unsqueeze(0)
    model.update(_block_keys("decoder_blocks.0", decoder_dim, 4 * decoder_dim))
    model["decoder_norm.weight"], model["decoder_norm.bias"] = torch.ones(decoder_dim), torch.zeros(decoder_dim)
    model["decoder_pred.weight"] = 0.02 * torch.randn(kwargs["patch_size"] ** 2 * 3, decoder_dim)
    model["decoder_pred.bias"] = torch.zeros(kwargs["patch_size"] ** 2 * 3)
    return model, encoder


def write_mae_checkpoint(path: str | Path, *, encoder_only: bool = False, seed: int = 0, **overrides) -> dict:
    """MAE training checkpoint (model, optimizer, epoch, scaler, args) or a release {'model': encoder}."""
    model, encoder = mae_model_state_dict(seed, **overrides)
    if encoder_only:
        torch.save({"model": encoder}, path)
    else:
        torch.save({"model": model, "optimizer": _adamw_state(model), "epoch": 399,
                    "scaler": dict(GRAD_SCALER_STATE), "args": mae_args()}, path)
    return encoder


def _dino_head(prefix: str, dim: int, kind: str, out_dim: int = 32) -> dict[str, torch.Tensor]:
    hidden, bottleneck = 64, 16
    head = {
        f"{prefix}mlp.0.weight": 0.02 * torch.randn(hidden, dim), f"{prefix}mlp.0.bias": torch.zeros(hidden),
        f"{prefix}mlp.2.weight": 0.02 * torch.randn(hidden, hidden), f"{prefix}mlp.2.bias": torch.zeros(hidden),
        f"{prefix}mlp.4.weight": 0.02 * torch.randn(bottleneck, hidden), f"{prefix}mlp.4.bias": torch.zeros(bottleneck),
        f"{prefix}last_layer.weight_g": torch.ones(out_dim, 1),
        f"{prefix}last_layer.weight_v": 0.02 * torch.randn(out_dim, bottleneck),
    }
    if kind == "ibot":  # iBOTHead: second projection for patch tokens
        head[f"{prefix}last_layer2.weight_g"] = torch.ones(out_dim, 1)
        head[f"{prefix}last_layer2.weight_v"] = 0.02 * torch.randn(out_dim, bottleneck)
    return head


def write_dino_checkpoint(path: str | Path, kind: str = "dino", *, seed: int = 0, **overrides) -> dict[str, dict]:
    """DINO/iBOT training checkpoint: DDP student (module.backbone/head), plain teacher (backbone/head)."""
    assert kind in ("dino", "ibot"), kind
    kwargs = {**TINY, **overrides}
    student = tiny_vit_state_dict(seed, class_token=True, **kwargs)
    teacher = tiny_vit_state_dict(seed + 1, class_token=True, **kwargs)
    student_saved = {f"module.backbone.{k}": v for k, v in student.items()}
    if kind == "ibot":  # student built with masked_im_modeling=True
        student_saved["module.backbone.masked_embed"] = torch.zeros(1, kwargs["embed_dim"])
    student_saved.update(_dino_head("module.head.", kwargs["embed_dim"], kind))
    teacher_saved = {f"backbone.{k}": v for k, v in teacher.items()}
    teacher_saved.update(_dino_head("head.", kwargs["embed_dim"], kind))
    args = argparse.Namespace(arch="vit_tiny", patch_size=kwargs["patch_size"], out_dim=32, norm_last_layer=True,
                              momentum_teacher=0.996, use_fp16=True, weight_decay=0.04, lr=0.0005,
                              epochs=100, global_crops_scale=(0.4, 1.0), local_crops_number=8,
                              output_dir=".", saveckp_freq=20, seed=0, dist_url="env://", world_size=16)
    save = {"student": student_saved, "teacher": teacher_saved, "optimizer": _adamw_state(student),
            "epoch": 100, "args": args, "fp16_scaler": dict(GRAD_SCALER_STATE)}
    if kind == "dino":
        save["dino_loss"] = {"center": torch.randn(1, 32)}
    else:
        args.use_masked_im_modeling = True
        args.pred_shape = "block"
        save["ibot_loss"] = {"center": torch.randn(1, 32), "center2": torch.randn(1, 32)}
    torch.save(save, path)
    return {"teacher": teacher, "student": student}


def write_state_dict(path: str | Path, state_dict: dict, *, wrapper: str | None = None, prefix: str = "") -> None:
    """A plain state dict (optionally prefixed, e.g. ``module.``) or {'model'|'state_dict': ...} wrapper."""
    state = {prefix + k: v for k, v in state_dict.items()}
    torch.save({wrapper: state} if wrapper else state, path)


def write_safetensors(path: str | Path, state_dict: dict) -> None:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state_dict.items()}, str(path), metadata={"format": "pt"})


class _OpensFile:
    """Unpickling this creates ``marker``: proof that a load ran code from the file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def write_malicious_checkpoint(path: str | Path, marker: str | Path) -> None:
    torch.save({"model": tiny_vit_state_dict(), "payload": _OpensFile(str(marker))}, path)


# -- transformers layouts (save_pretrained; transformers is a test dependency only) ----------------------
HF_TINY = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64, image_size=32,
               patch_size=8, qkv_bias=True)
HF_CLASSES = {  # model_type -> (config class, base model class, task classes)
    "ijepa": ("IJepaConfig", "IJepaModel", ("IJepaForImageClassification",)),
    "vit": ("ViTConfig", "ViTModel", ("ViTForImageClassification",)),
    "vit_mae": ("ViTMAEConfig", "ViTMAEModel", ("ViTMAEForPreTraining",)),
    "dinov2": ("Dinov2Config", "Dinov2Model", ("Dinov2ForImageClassification",)),
    "dinov2_with_registers": ("Dinov2WithRegistersConfig", "Dinov2WithRegistersModel",
                              ("Dinov2WithRegistersForImageClassification",)),
}


def _perturb_(module: torch.nn.Module, seed: int) -> None:
    """Random LayerNorm/LayerScale/bias values so no layer is an identity (HF inits them to 1 and 0)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))


def write_hf_model(folder: str | Path, model_type: str, *, task: str | None = None, seed: int = 0,
                   safetensors: bool = True, max_shard_size: str | None = None, **config):
    """A tiny random transformers model saved with ``save_pretrained``; returns the model (eval mode)."""
    import transformers

    config_cls, base_cls, _ = HF_CLASSES[model_type]
    extra = {"mask_ratio": 0.0, "decoder_hidden_size": 32, "decoder_num_hidden_layers": 1,
             "decoder_num_attention_heads": 2, "decoder_intermediate_size": 64} if model_type == "vit_mae" else {}
    if model_type == "ijepa":
        extra["layer_norm_eps"] = 1e-6  # as transformers' convert_ijepa_to_hf.py sets it
    cfg = getattr(transformers, config_cls)(**{**HF_TINY, **extra, **config}, **({"num_labels": 5} if task else {}))
    torch.manual_seed(seed)
    model = getattr(transformers, task or base_cls)(cfg).eval()
    _perturb_(model, seed)
    shards = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(str(folder), **shards)
    if not safetensors:  # transformers < 4.35 wrote torch.save(state_dict) as pytorch_model.bin (5.x cannot)
        from safetensors.torch import load_file

        weights = Path(folder) / "model.safetensors"
        torch.save(load_file(str(weights)), Path(folder) / "pytorch_model.bin")
        weights.unlink()
    return model


def write_hf_cache(cache: str | Path, repo_id: str, folder: str | Path, revision: str = "0123456789abcdef" * 2 + "01234567") -> Path:
    """Lay ``folder``'s files out as huggingface_hub does: blobs/<sha256>, snapshots/<rev>/<name> -> blob, refs/main."""
    import hashlib
    import os

    repo = Path(cache) / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / revision
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for path in sorted(Path(folder).iterdir()):
        data = path.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        os.symlink(os.path.relpath(blob, snapshot), snapshot / path.name)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    return snapshot


def write_hf_data2vec(path: str | Path, cls_name: str, **overrides):
    """A tiny random transformers Data2VecVision model, every parameter perturbed, saved with save_pretrained."""
    import transformers  # the test extra; the runtime reads these folders without it
    config = transformers.Data2VecVisionConfig(
        hidden_size=64, num_hidden_layers=3, num_attention_heads=4, intermediate_size=128, image_size=TINY["img_size"],
        patch_size=16, layer_norm_eps=1e-12, **overrides)
    torch.manual_seed(1)
    model = getattr(transformers, cls_name)(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    model.save_pretrained(path)
    return model


# -- DINOv2 official release (facebookresearch/dinov2 hub *_pretrain.pth) ---------------------------------
def write_dinov2_release(path: str | Path, *, registers: int = 0, swiglu: bool = False, seed: int = 0,
                         dim: int = 64, depth: int = 3, patch: int = 8, grid: int = 4) -> dict:
    """DinoVisionTransformer.state_dict() with block_chunks=0: cls_token, pos_embed (cls slot + grid),
    register_tokens, mask_token [1, D], blocks.i.{norm1, attn.qkv, attn.proj, ls1.gamma, norm2,
    mlp.fc1/fc2 or mlp.w12/w3 (SwiGLU, hidden rounded to 8), ls2.gamma}, norm. Returns what was saved."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=0.02, base=0.0):
        return base + scale * torch.randn(*shape, generator=gen)

    hidden = 4 * dim
    sd = {"cls_token": rand(1, 1, dim, scale=0.5), "pos_embed": rand(1, 1 + grid * grid, dim, scale=0.5),
          "mask_token": torch.zeros(1, dim), "patch_embed.proj.weight": rand(dim, 3, patch, patch, scale=0.1),
          "patch_embed.proj.bias": rand(dim)}
    if registers:
        sd["register_tokens"] = rand(1, registers, dim, scale=0.5)
    for i in range(depth):
        b = f"blocks.{i}."
        sd.update({b + "norm1.weight": rand(dim, scale=0.1, base=1.0), b + "norm1.bias": rand(dim, scale=0.1),
                   b + "attn.qkv.weight": rand(3 * dim, dim, scale=0.1), b + "attn.qkv.bias": rand(3 * dim),
                   b + "attn.proj.weight": rand(dim, dim, scale=0.1), b + "attn.proj.bias": rand(dim),
                   b + "ls1.gamma": rand(dim, scale=0.3, base=0.5), b + "ls2.gamma": rand(dim, scale=0.3, base=0.5),
                   b + "norm2.weight": rand(dim, scale=0.1, base=1.0), b + "norm2.bias": rand(dim, scale=0.1)})
        if swiglu:
            h = (int(hidden * 2 / 3) + 7) // 8 * 8
            sd.update({b + "mlp.w12.weight": rand(2 * h, dim, scale=0.1), b + "mlp.w12.bias": rand(2 * h),
                       b + "mlp.w3.weight": rand(dim, h, scale=0.1), b + "mlp.w3.bias": rand(dim)})
        else:
            sd.update({b + "mlp.fc1.weight": rand(hidden, dim, scale=0.1), b + "mlp.fc1.bias": rand(hidden),
                       b + "mlp.fc2.weight": rand(dim, hidden, scale=0.1), b + "mlp.fc2.bias": rand(dim)})
    sd.update({"norm.weight": rand(dim, scale=0.1, base=1.0), "norm.bias": rand(dim, scale=0.1)})
    torch.save(sd, path)
    return sd


# -- the paper's other baselines, in their release layouts ------------------------------------------------
# facebookresearch/msn src/msn_train.py, lxtGH/CAE furnace/utils.py + models/modeling_cae*.py,
# facebookresearch/data2vec_vision beit/run_cyclical.py + modeling_cyclical.py, facebookresearch/mae
# main_finetune.py (global_pool). Weights are random and perturbed so that no norm or scale is an identity.

def _perturbed(shape, scale: float = 0.1, center: float = 0.0) -> torch.Tensor:
    return center + scale * torch.randn(shape)


def _msn_projection_head(dim: int, hidden: int = 32, out: int = 16) -> dict[str, torch.Tensor]:
    """MSN init_model's ``fc`` Sequential with use_bn: fc1, bn1, fc2, bn2, fc3 (BatchNorm buffers included)."""
    head = {}
    for name, (o, i) in {"fc1": (hidden, dim), "fc2": (hidden, hidden), "fc3": (out, hidden)}.items():
        head[f"fc.{name}.weight"], head[f"fc.{name}.bias"] = _perturbed((o, i), 0.02), torch.zeros(o)
    for bn in ("bn1", "bn2"):
        head.update({f"fc.{bn}.weight": torch.ones(hidden), f"fc.{bn}.bias": torch.zeros(hidden),
                     f"fc.{bn}.running_mean": _perturbed(hidden), f"fc.{bn}.running_var": torch.ones(hidden),
                     f"fc.{bn}.num_batches_tracked": torch.tensor(100)})
    return head


def write_msn_checkpoint(path: str | Path, *, ddp: bool = True, seed: int = 0, **overrides) -> dict[str, dict]:
    """MSN training checkpoint. Returns {"target": sd, "anchor": sd} (encoders without the head, timm names)."""
    kwargs = {**TINY, **overrides}
    nets = {"anchor": tiny_vit_state_dict(seed, class_token=True, **kwargs),
            "target": tiny_vit_state_dict(seed + 1, class_token=True, **kwargs)}
    prefix = "module." if ddp else ""
    saved = {b: {prefix + k: v for k, v in {**sd, **_msn_projection_head(kwargs["embed_dim"])}.items()}
             for b, sd in nets.items()}
    torch.save({"encoder": saved["anchor"], "opt": _adamw_state(nets["anchor"]), "prototypes": torch.randn(64, 16),
                "target_encoder": saved["target"], "epoch": 300, "loss": 2.5, "batch_size": 32,
                "world_size": 8 if ddp else 1, "lr": 0.001, "temperature": 0.1}, path)
    return nets


def write_mae_finetuned_checkpoint(path: str | Path, *, seed: int = 0, num_classes: int = 10, **overrides) -> dict:
    """MAE fine-tuning checkpoint with global_pool=True: no ``norm``, ``fc_norm`` after pooling, ``head``."""
    kwargs = {**TINY, **overrides}
    model = tiny_vit_state_dict(seed, class_token=True, **kwargs)
    model["fc_norm.weight"], model["fc_norm.bias"] = model.pop("norm.weight"), model.pop("norm.bias")
    head = {"head.weight": _perturbed((num_classes, kwargs["embed_dim"]), 0.02), "head.bias": torch.zeros(num_classes)}
    args = argparse.Namespace(model="vit_tiny_patch16", global_pool=True, nb_classes=num_classes, epochs=100,
                              layer_decay=0.75, drop_path=0.1, smoothing=0.1, finetune="mae_pretrain.pth")
    torch.save({"model": {**model, **head}, "optimizer": _adamw_state(model), "epoch": 99,
                "scaler": dict(GRAD_SCALER_STATE), "args": args}, path)
    return model


def beit_relative_position_index(side: int) -> torch.Tensor:
    """BEiT's index into a relative position table (cls row/column use the last three entries)."""
    coords = torch.stack(torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (side - 1)
    n = (2 * side - 1) ** 2 + 3
    index = torch.zeros(side * side + 1, side * side + 1, dtype=torch.long)
    index[1:, 1:] = rel[..., 0] * (2 * side - 1) + rel[..., 1]
    index[0, :], index[:, 0], index[0, 0] = n - 3, n - 2, n - 1
    return index


def _rel_pos(prefix: str, side: int, heads: int) -> dict[str, torch.Tensor]:
    return {f"{prefix}relative_position_bias_table": _perturbed(((2 * side - 1) ** 2 + 3, heads), 0.5),
            f"{prefix}relative_position_index": beit_relative_position_index(side)}


def beit_style_state_dict(seed: int = 0, *, heads: int = 3, rel_pos: str | None = "shared", abs_pos: bool = False,
                          **overrides) -> dict[str, torch.Tensor]:
    """BEiT-style encoder (modeling_finetune/modeling_cyclical names): q/v biases, gamma_1/2, norm."""
    kwargs = {**TINY, **overrides}
    torch.manual_seed(seed)
    dim, patch, side = kwargs["embed_dim"], kwargs["patch_size"], kwargs["img_size"] // kwargs["patch_size"]
    sd = {"cls_token": _perturbed((1, 1, dim), 0.5), "patch_embed.proj.weight": _perturbed((dim, 3, patch, patch), 0.05),
          "patch_embed.proj.bias": _perturbed(dim), "norm.weight": _perturbed(dim, 0.1, 1.0),
          "norm.bias": _perturbed(dim)}
    if abs_pos:
        sd["pos_embed"] = _perturbed((1, side * side + 1, dim), 0.5)
    if rel_pos == "shared":
        sd.update(_rel_pos("rel_pos_bias.", side, heads))
    for i in range(kwargs["depth"]):
        b = f"blocks.{i}."
        sd.update({b + "norm1.weight": _perturbed(dim, 0.1, 1.0), b + "norm1.bias": _perturbed(dim),
                   b + "attn.qkv.weight": _perturbed((3 * dim, dim), 0.1), b + "attn.q_bias": _perturbed(dim),
                   b + "attn.v_bias": _perturbed(dim), b + "attn.proj.weight": _perturbed((dim, dim), 0.1),
                   b + "attn.proj.bias": _perturbed(dim), b + "norm2.weight": _perturbed(dim, 0.1, 1.0),
                   b + "norm2.bias": _perturbed(dim), b + "mlp.fc1.weight": _perturbed((4 * dim, dim), 0.1),
                   b + "mlp.fc1.bias": _perturbed(4 * dim), b + "mlp.fc2.weight": _perturbed((dim, 4 * dim), 0.05),
                   b + "mlp.fc2.bias": _perturbed(dim), b + "gamma_1": _perturbed(dim, 0.1, 0.5),
                   b + "gamma_2": _perturbed(dim, 0.1, 0.5)})
        if rel_pos == "block":
            sd.update(_rel_pos(b + "attn.", side, heads))
    return sd


def write_data2vec_checkpoint(path: str | Path, *, seed: int = 0, with_ema: bool = True, **overrides) -> dict[str, dict]:
    """data2vec_vision pretraining checkpoint (run_cyclical.py: shared relative position bias, no abs pos).

    Returns {"student": sd, "teacher": sd} in the official names (``norm`` included, ``relative_position_index``
    buffers kept) for reference forwards."""
    nets = {"student": beit_style_state_dict(seed, **overrides), "teacher": beit_style_state_dict(seed + 1, **overrides)}
    dim = nets["student"]["cls_token"].shape[-1]
    extra = {"mask_token": _perturbed((1, 1, dim), 0.02), "lm_head.weight": _perturbed((dim, dim), 0.02),
             "lm_head.bias": torch.zeros(dim)}
    args = argparse.Namespace(model="beit_base_patch16_224", target_layers=[6, 7, 8, 9, 10, 11], ema_decay=0.9998,
                              ema_start_at=0, layer_scale_init_value=1e-4, layer_results="end", rel_pos_bias=True,
                              abs_pos_emb=False, post_target_layer_norm=True, l1_beta=2.0, epochs=800)
    save = {"model": {**nets["student"], **extra}, "optimizer": _adamw_state(nets["student"]), "epoch": 799,
            "scaler": dict(GRAD_SCALER_STATE), "args": args}
    if with_ema:
        save["model_ema"] = {**nets["teacher"], **extra}
    torch.save(save, path)
    return nets


def _cae_neck(dim: int) -> dict[str, torch.Tensor]:
    """A one-block regressor + one-block decoder ``pretext_neck`` (modeling_cae_helper.VisionTransformerNeck)."""
    neck = {}
    r = "pretext_neck.regressor_blocks.0."
    for n in ("norm1_q", "norm1_k", "norm1_v", "norm2_cross"):
        neck[r + n + ".weight"], neck[r + n + ".bias"] = torch.ones(dim), torch.zeros(dim)
    for n in ("q", "k", "v"):
        neck[r + f"cross_attn.{n}.weight"] = _perturbed((dim, dim), 0.02)
    neck.update({r + "cross_attn.q_bias": torch.zeros(dim), r + "cross_attn.v_bias": torch.zeros(dim),
                 r + "cross_attn.proj.weight": _perturbed((dim, dim), 0.02), r + "cross_attn.proj.bias": torch.zeros(dim),
                 r + "gamma_1_cross": torch.ones(dim), r + "gamma_2_cross": torch.ones(dim)})
    neck.update({k.replace("blocks.0.", "pretext_neck.decoder_blocks.0."): v
                 for k, v in beit_style_state_dict(7, rel_pos=None, embed_dim=dim, depth=1).items() if "blocks.0." in k})
    neck.update({"pretext_neck.norm.weight": torch.ones(dim), "pretext_neck.norm.bias": torch.zeros(dim),
                 "pretext_neck.norm2.weight": torch.ones(dim), "pretext_neck.norm2.bias": torch.zeros(dim),
                 "pretext_neck.head.weight": _perturbed((64, dim), 0.02), "pretext_neck.head.bias": torch.zeros(64)})
    return neck


def write_cae_checkpoint(path: str | Path, *, seed: int = 0, model_name: str = "cae_small_patch16_224_8k_vocab",
                         **overrides) -> dict:
    """CAE pretraining checkpoint (teacher removed on save). Returns the encoder in official names.

    The default ``cae_small`` name means 12 heads (head width 16 at the tiny width 192), not the width table's."""
    kwargs = {**TINY, **overrides}
    encoder = beit_style_state_dict(seed, rel_pos=None, **kwargs)
    side = kwargs["img_size"] // kwargs["patch_size"]
    encoder["pos_embed"] = torch.cat([torch.zeros(1, kwargs["embed_dim"]),
                                      sincos_pos_embed_2d(kwargs["embed_dim"], side)]).unsqueeze(0)
    model = {f"encoder.{k}": v for k, v in encoder.items()}
    model.update(_cae_neck(kwargs["embed_dim"]))
    model["mask_token"] = _perturbed((1, 1, kwargs["embed_dim"]), 0.02)
    args = argparse.Namespace(model=model_name, decoder_embed_dim=kwargs["embed_dim"], regressor_depth=1,
                              decoder_depth=1, layer_scale_init_value=0.1, sincos_pos_emb=True, mask_generator="block",
                              num_mask_patches=98, align_loss_weight=2.0)
    torch.save({"model": model, "optimizer": _adamw_state(encoder), "epoch": 1599,
                "scaler": dict(GRAD_SCALER_STATE), "args": args}, path)
    return encoder


def beit_finetune_args(data2vec: dict | None = None, **overrides) -> argparse.Namespace:
    """``run_class_finetuning.py``'s args as saved (microsoft/unilm beit/ defaults; ``data2vec``: the extra
    flags of facebookresearch/data2vec_vision's copy, e.g. ``{"linear_classifier": True}``)."""
    args = dict(model="beit_base_patch16_224", nb_classes=10, input_size=48, epochs=30, rel_pos_bias=True,
                abs_pos_emb=False, layer_scale_init_value=0.1, use_mean_pooling=True, drop_path=0.1, layer_decay=0.9,
                lr=5e-4, weight_decay=0.05, model_ema=False, smoothing=0.1, finetune="beit_base_patch16_224_pt22k.pth",
                model_key="model|module", init_scale=0.001, output_dir="./output_dir")
    if data2vec is not None:
        args.update({"linear_classifier": False, "learn_layer_weights": False, "layernorm_before_combine": False,
                     "remove_final_norm": False, "reinit_final_norm": False, "target_layer": -1,
                     "num_mask_patches": 0, **data2vec})
    return argparse.Namespace(**{**args, **overrides})


def write_beit_finetuned_checkpoint(path: str | Path, *, release: bool = False, with_ema: bool = False, seed: int = 0,
                                    args: argparse.Namespace | None = None, rel_pos: str = "block",
                                    num_classes: int = 10, **overrides) -> dict:
    """A BEiT-style fine-tuned model as ``run_class_finetuning.py`` (unilm beit/ or data2vec_vision beit/)
    saves it with ``utils.save_model`` on torch.amp: ``{'model', 'optimizer', 'epoch', 'scaler', 'args'}``
    plus ``model_ema`` with ``--model_ema``; ``release``: ``{'model'}`` only, as the released
    ``beit_*_pt22k_ft22kto1k.pth``. ``model`` is ``modeling_finetune.VisionTransformer.state_dict()``:
    relative position tables per block (``rel_pos="block"``: BEiT's ``use_rel_pos_bias``) or shared
    (``"shared"``: data2vec's ``use_shared_rel_pos_bias``) with their index buffers, ``fc_norm`` after the mean (``use_mean_pooling``;
    ``norm`` is Identity) or ``norm`` (``--use_cls``), no final-norm weights with data2vec's
    ``--linear_classifier`` (``fc_norm`` without affine), ``layer_log_weights`` with ``--learn_layer_weights``,
    and ``head``. Returns the saved ``model`` without ``head`` (official names, buffers kept)."""
    args = args or beit_finetune_args(nb_classes=num_classes)
    model = beit_style_state_dict(seed, rel_pos=rel_pos if args.rel_pos_bias else None, abs_pos=args.abs_pos_emb,
                                  **overrides)
    dim, depth = model["cls_token"].shape[-1], 1 + max(int(k.split(".")[1]) for k in model if k.startswith("blocks."))
    norm = {"weight": model.pop("norm.weight"), "bias": model.pop("norm.bias")}
    if not args.use_mean_pooling:
        model.update({f"norm.{k}": v for k, v in norm.items()})
    elif not getattr(args, "linear_classifier", False):
        model.update({f"fc_norm.{k}": v for k, v in norm.items()})
    if getattr(args, "learn_layer_weights", False):
        model["layer_log_weights"] = torch.zeros(depth)
    saved = {**model, "head.weight": _perturbed((num_classes, dim), 0.02), "head.bias": torch.zeros(num_classes)}
    if release:
        torch.save({"model": saved}, path)
        return model
    save = {"model": saved, "optimizer": _adamw_state(model), "epoch": args.epochs - 1,
            "scaler": dict(GRAD_SCALER_STATE), "args": args}
    if with_ema:
        save["model_ema"] = {k: v.clone() for k, v in saved.items()}
    torch.save(save, path)
    return model
