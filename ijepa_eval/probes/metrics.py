"""Classification metrics shared by every probe, vectorised over a grid of heads.

Probes hand over their top-5 predictions rather than full score matrices: 16 heads × 50k images ×
1000 classes of logits would not fit in memory, their top-5 indices do. Accuracies are in percent,
the unit of the paper's tables and of result JSONs.
"""

from __future__ import annotations

import torch

TOPK = 5


def topk_predictions(scores: torch.Tensor) -> torch.Tensor:
    """[..., C] scores -> [..., min(5, C)] class indices, best first."""
    return scores.topk(min(TOPK, scores.shape[-1]), dim=-1).indices


def scores_from_topk(topk: torch.Tensor, labels: torch.Tensor, num_classes: int) -> list[dict[str, float]]:
    """top1, top5 and mean per-class accuracy of every head.

    ``topk``: [H, N, k] predicted classes (best first), ``labels``: [N] int64.
    Mean per-class accuracy averages the top-1 recall of the classes present in ``labels``.
    """
    labels = labels.to(topk.device)
    hit = topk == labels.view(1, -1, 1)
    top1 = hit[..., 0].double()  # [H, N]
    top5 = hit.any(-1).double()
    counts = torch.bincount(labels, minlength=num_classes).double()
    per_class = torch.zeros(topk.shape[0], num_classes, dtype=torch.float64, device=topk.device)
    per_class.index_add_(1, labels, top1)
    present = counts > 0
    mean_per_class = (per_class[:, present] / counts[present]).mean(-1)
    table = torch.stack([top1.mean(-1), top5.mean(-1), mean_per_class], dim=1).mul(100.0).cpu().tolist()
    return [{"top1": a, "top5": b, "mean_per_class_acc": c} for a, b, c in table]
