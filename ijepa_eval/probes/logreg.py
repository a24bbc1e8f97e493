"""Multinomial logistic regression on frozen features: the low-shot probe of MSN, DINO and iBOT.

Features are centered with the training mean and L2-normalised, then a full-batch L-BFGS minimises
``mean cross-entropy + lam/2 * ||W||^2`` (bias not penalised). This is scikit-learn's multinomial
``LogisticRegression(C)`` with ``lam = 1 / (C * n_train)``, solved in torch so it runs on the GPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ijepa_eval.probes.metrics import scores_from_topk, topk_predictions


@dataclass
class LogRegModel:
    weight: torch.Tensor  # [F, C]
    bias: torch.Tensor  # [C]
    mean: torch.Tensor  # [F], training mean used to center
    lam: float

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        x = preprocess(x.to(self.weight), self.mean)
        return x @ self.weight + self.bias

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(x).softmax(-1)


def preprocess(x: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    return F.normalize(x - mean, dim=-1)


def lam_from_sklearn_c(c: float, n_train: int) -> float:
    """The lam that makes this objective equal to scikit-learn's ``LogisticRegression(C=c)``."""
    return 1.0 / (c * n_train)


def fit_logreg(x: torch.Tensor, y: torch.Tensor, num_classes: int, lam: float, *, max_iter: int = 1000,
               device: str | torch.device = "cpu", dtype: torch.dtype = torch.float64) -> LogRegModel:
    """Fit one regularisation strength. float64 by default: L-BFGS stalls early in float32 on tiny lam."""
    x = x.to(device, dtype)
    y = torch.as_tensor(y, dtype=torch.int64, device=device)
    mean = x.mean(0)
    xn = preprocess(x, mean)
    w = torch.zeros(x.shape[1], num_classes, device=device, dtype=dtype, requires_grad=True)
    b = torch.zeros(num_classes, device=device, dtype=dtype, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, history_size=20, tolerance_grad=1e-9,
                            tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(xn @ w + b, y) + 0.5 * lam * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return LogRegModel(w.detach(), b.detach(), mean, lam)


def evaluate_logreg(models: Sequence[LogRegModel], x: torch.Tensor, y: torch.Tensor,
                    num_classes: int) -> list[dict[str, float]]:
    """Scores of every model (one per lam) on features ``x``."""
    with torch.no_grad():
        topk = torch.stack([topk_predictions(m.logits(x)) for m in models])
    return scores_from_topk(topk, torch.as_tensor(y, dtype=torch.int64), num_classes)
