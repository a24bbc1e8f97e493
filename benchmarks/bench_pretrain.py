"""I-JEPA pretraining step throughput, and on CUDA the model FLOPs utilisation (MFU).

One step = target forward (full image, no grad) + context encoder forward/backward on the context tokens
+ predictor forward/backward + fused AdamW + EMA, on random images with real multi-block masks (no data
loading: this measures the model, the loader is the data room's). FLOPs are counted analytically from the
mask sizes actually drawn (matmuls and attention; norms and activations ignored), backward = 2 x forward.

    python benchmarks/bench_pretrain.py                    # CPU: tiny_cpu images/s
    python benchmarks/bench_pretrain.py --device cuda      # ViT-H/14, batch 128, bf16: images/s and MFU
    python benchmarks/bench_pretrain.py --device cuda --arch vitl16_in1k --compile
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from ijepa_eval.pretrain.configs import apply_overrides, get_config
from ijepa_eval.pretrain.loop import param_groups
from ijepa_eval.pretrain.masks import MaskCollator
from ijepa_eval.pretrain.model import build_ijepa, ema_update, jepa_loss, make_targets

# dense bf16 peak TFLOP/s by device-name substring (vendor datasheets, SXM parts)
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 70.0, "V100": 125.0}


def block_flops(tokens: float, dim: int, mlp_ratio: float) -> float:
    """Forward FLOPs of one pre-norm ViT block on a sequence of ``tokens`` tokens."""
    matmuls = 2 * tokens * dim * dim * (4 + 2 * mlp_ratio)  # qkv (3), proj (1), fc1 + fc2 (2 x ratio)
    attention = 4 * tokens * tokens * dim  # q @ k^T and attn @ v
    return matmuls + attention


def step_flops(cfg, batch: int, n_ctx: float, n_tgt: float) -> float:
    """Training FLOPs of one step for mean context / target-block lengths (per-batch constants)."""
    arch = cfg.resolved_arch()
    d, depth, ratio = arch["embed_dim"], arch["depth"], arch["mlp_ratio"]
    n_all = (cfg.crop_size // cfg.patch_size) ** 2
    patch = 2 * n_all * 3 * cfg.patch_size**2 * d
    target = batch * (patch + depth * block_flops(n_all, d, ratio))
    # the patch embedding runs once on the full image; its backward is the weight gradient only (images
    # need no grad), so it costs 2 x forward while the context blocks cost 3 x
    context = batch * (2 * patch + 3 * cfg.num_enc_masks * depth * block_flops(n_ctx, d, ratio))
    dp, seqs = cfg.pred_emb_dim, batch * cfg.num_enc_masks * cfg.num_pred_masks
    embed = 2 * batch * cfg.num_enc_masks * n_ctx * d * dp  # D -> Dp on the context tokens, before repeat
    predictor = seqs * (cfg.pred_depth * block_flops(n_ctx + n_tgt, dp, ratio) + 2 * n_tgt * dp * d) + embed
    return target + context + 3 * predictor


def peak_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def run(
    quick: bool = False, device: str | None = None, arch: str | None = None, compile: bool = False
) -> dict:
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = dev.type == "cuda"
    name = arch or ("vith14_in1k" if cuda else "tiny_cpu")
    cfg = get_config(name)
    if quick and not cuda:
        cfg = apply_overrides(cfg, {"batch_size": 16})
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
    batch = cfg.batch_size
    encoder, predictor, target = build_ijepa(
        **cfg.resolved_arch(), pred_depth=cfg.pred_depth, pred_emb_dim=cfg.pred_emb_dim
    )
    encoder.to(dev), predictor.to(dev), target.to(dev)
    optimizer = torch.optim.AdamW(param_groups(encoder, predictor), lr=1e-4, fused=cuda)
    for group in optimizer.param_groups:
        group["weight_decay"] = 0.0 if group["WD_exclude"] else 0.04
    context, pred = (torch.compile(encoder), torch.compile(predictor)) if compile else (encoder, predictor)
    collator = MaskCollator(
        cfg.crop_size, cfg.patch_size, cfg.enc_mask_scale, cfg.pred_mask_scale, cfg.aspect_ratio,
        cfg.num_enc_masks, cfg.num_pred_masks, cfg.min_keep, cfg.allow_overlap,
    )  # fmt: skip
    imgs = torch.randn(batch, 3, cfg.crop_size, cfg.crop_size, device=dev)
    n_steps, warmup = (3, 2) if quick else (10, 3)
    batches = [collator.sample_masks(batch) for _ in range(warmup + n_steps)]
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda)

    def step(masks_enc, masks_pred):
        masks_enc = [m.to(dev, non_blocking=True) for m in masks_enc]
        masks_pred = [m.to(dev, non_blocking=True) for m in masks_pred]
        with autocast:
            targets = make_targets(target, imgs, masks_pred, len(masks_enc))
            loss = jepa_loss(pred(context(imgs, masks_enc), masks_enc, masks_pred), targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ema_update(target, encoder, 0.996)

    for masks in batches[:warmup]:
        step(*masks)
    if cuda:
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
    start = time.perf_counter()
    for masks in batches[warmup:]:
        step(*masks)
    if cuda:
        torch.cuda.synchronize(dev)
    seconds = (time.perf_counter() - start) / n_steps
    timed = batches[warmup:]
    n_ctx = sum(m[0][0].shape[1] for m in timed) / n_steps
    n_tgt = sum(m[1][0].shape[1] for m in timed) / n_steps
    tflops = step_flops(cfg, batch, n_ctx, n_tgt) / seconds / 1e12
    peak = peak_tflops(dev)
    result = {
        "images_per_s": round(batch / seconds, 2),
        "step_ms": round(1000 * seconds, 1),
        "config": name,
        "batch_size": batch,
        "device": torch.cuda.get_device_name(dev) if cuda else "cpu",
        "threads": torch.get_num_threads(),
        "bf16": cuda,
        "compile": compile,
        "mean_context_tokens": round(n_ctx, 1),
        "mean_target_tokens": round(n_tgt, 1),
        "model_tflops_per_s": round(tflops, 3),
    }
    if peak:
        result.update(peak_tflops=peak, mfu=round(tflops / peak, 4))
    if cuda:
        result["max_memory_gib"] = round(torch.cuda.max_memory_allocated(dev) / 2**30, 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer steps (and batch 16 on CPU)")
    parser.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    parser.add_argument(
        "--arch", default=None, help="pretraining config name (default vith14_in1k on CUDA, tiny_cpu on CPU)"
    )
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile the context encoder and predictor"
    )
    args = parser.parse_args()
    print(json.dumps(run(args.quick, args.device, args.arch, args.compile), indent=2))


if __name__ == "__main__":
    main()
