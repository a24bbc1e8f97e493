"""What the loop logs besides the loss: collapse signals of the target encoder's tokens, and a cheap kNN
probe of its pooled features on a labelled dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from ijepa_eval.pretrain.batches import clevr_mini_root
from ijepa_eval.pretrain.configs import DATASET_CLEVR_MINI, PretrainConfig


@torch.no_grad()
def collapse_stats(tokens: torch.Tensor) -> dict[str, float]:
    """Collapse signals of the target encoder's tokens [B, N, D], layer-normed like the training targets.

    ``target_std``: std over the batch at each (position, channel), averaged; ~1 when targets vary
    across images, -> 0 when they collapse to an image-independent map. ``target_erank``: effective rank
    (exp entropy of the normalised singular values) of all centred tokens; -> 1 under dimensional collapse.
    The singular values come from the eigenvalues of the D x D Gram matrix (float64, so TF32 matmuls do not
    touch it): for ViT-H at batch 128 that is a 1280² eigvalsh instead of an SVD of 32768 x 1280.
    """
    h = F.layer_norm(tokens.float(), (tokens.size(-1),))
    flat = h.flatten(0, 1).double()
    centred = flat - flat.mean(0)
    s = torch.linalg.eigvalsh(centred.T @ centred).clamp_min(0).sqrt()
    p = s / s.sum().clamp_min(1e-12)
    erank = torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum())
    return {"target_std": float(h.std(0).mean()), "target_erank": float(erank)}


@torch.no_grad()
def knn_monitor(
    target: nn.Module, cfg: PretrainConfig, out_dir: Path, device: torch.device, max_images: int = 2000
) -> dict[str, float]:
    """kNN top-1 (k=20) of the target encoder's avg-pooled features: train split vs val split of a
    labelled dataset (default: clevr_count on the CLEVR-mini pretraining data), at most ``max_images``
    evenly spaced images per split so the monitor stays cheap on large datasets."""
    from torch.utils.data import Subset

    from ijepa_eval.data import eval_transform, get_dataset
    from ijepa_eval.probes import knn_scores

    if cfg.knn_dataset:
        name, root = cfg.knn_dataset, cfg.root
    else:  # CLEVR-mini: the given root when pretraining on it, else the generated copy
        name = "clevr_count"
        given = cfg.dataset == DATASET_CLEVR_MINI and cfg.root
        root = cfg.root if given else str(clevr_mini_root(cfg, out_dir))
    feats = []
    for split in ("train", "val"):
        ds = get_dataset(name, root or None, split=split, transform=eval_transform(name, cfg.crop_size))
        rows = np.linspace(0, len(ds) - 1, min(len(ds), max_images)).round().astype(int).tolist()
        loader = DataLoader(Subset(ds, rows), batch_size=64, num_workers=0)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            pooled = [target(x.to(device)).mean(1).float().cpu() for x, _ in loader]
        feats.append((torch.cat(pooled), ds.labels[rows], ds.num_classes))
    (xtr, ytr, n_cls), (xva, yva, _) = feats
    return {"knn_top1": knn_scores(xtr, ytr, xva, yva, [20], n_cls, device=device)[0]["top1"]}
