"""Multinomial logistic regression on frozen features: the low-shot probe of MSN (Table 2's comparison).

Variant ``msn`` (default) is MSN's ``logistic_eval.py``: cyanure ``preprocess(X, normalize=True,
columns=False, centering=True)`` on train and test features alike (each vector minus the mean of its own
entries, then L2-normalised: no statistics of the training set), then ``MultiClassifier(loss=
'multiclass-logistic', penalty='l2', fit_intercept=False)`` fitted with ``lambd / n_train``, i.e. it minimises

    mean_i cross_entropy(x_i @ W, y_i) + (lambd / n_train) / 2 * ||W||^2          (no intercept)

Variant ``sklearn`` centres with the training mean, L2-normalises and adds an unpenalised intercept: it is
scikit-learn's multinomial ``LogisticRegression(C=1 / lambd)``. Both take ``lambd`` in cyanure's units
(MSN's ``--lambd``, sklearn's ``1 / C``). cyanure stops at a relative duality gap of 1e-3; here full-batch
L-BFGS runs in float64 to a tight gradient tolerance, in torch, so it runs on the GPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torch.nn.functional as F

from ijepa_eval.errors import ConfigError
from ijepa_eval.probes.metrics import scores_from_topk, topk_predictions

LogRegVariant = Literal["msn", "sklearn"]


@dataclass
class LogRegModel:
    weight: torch.Tensor  # [F, C]
    bias: torch.Tensor | None  # [C]; None without intercept (msn)
    mean: torch.Tensor | None  # [F] training mean (sklearn); msn centres each vector on its own
    lam: float  # the penalty actually applied: lambd / n_train
    variant: LogRegVariant = "msn"

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        z = preprocess(x.to(self.weight), self.variant, self.mean) @ self.weight
        return z if self.bias is None else z + self.bias

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(x).softmax(-1)


def preprocess(x: torch.Tensor, variant: LogRegVariant, mean: torch.Tensor | None = None) -> torch.Tensor:
    """The probe's input. msn: cyanure's per-sample centring + L2 (a constant vector becomes 0 here;
    cyanure substitutes a random unit vector). sklearn: centred with the training ``mean``, then L2."""
    if variant == "msn":
        return F.normalize(x - x.mean(1, keepdim=True), dim=-1)
    assert mean is not None, "the sklearn variant centres with the training mean"
    return F.normalize(x - mean, dim=-1)


def fit_logreg(x: torch.Tensor, y: torch.Tensor, num_classes: int, lambd: float, *,
               variant: LogRegVariant = "msn", max_iter: int = 1000, device: str | torch.device = "cpu",
               dtype: torch.dtype = torch.float64) -> LogRegModel:
    """Fit one strength ``lambd`` (cyanure units: the penalty is ``lambd / len(x)``). float64 by default:
    L-BFGS stalls early in float32 on MSN's tiny penalties (0.00025 / 12811 ~ 2e-8)."""
    if variant not in get_args(LogRegVariant):
        raise ConfigError(f"logreg variant '{variant}' is unknown; use one of {', '.join(get_args(LogRegVariant))}")
    x = x.to(device, dtype)
    y = torch.as_tensor(y, dtype=torch.int64, device=device)
    mean = x.mean(0) if variant == "sklearn" else None
    xn = preprocess(x, variant, mean)
    lam = lambd / len(x)
    w = torch.zeros(x.shape[1], num_classes, device=device, dtype=dtype, requires_grad=True)
    b = torch.zeros(num_classes, device=device, dtype=dtype, requires_grad=True) if variant == "sklearn" else None
    opt = torch.optim.LBFGS([w] if b is None else [w, b], lr=1.0, max_iter=max_iter, history_size=20,
                            tolerance_grad=1e-9, tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        z = xn @ w
        loss = F.cross_entropy(z if b is None else z + b, y) + 0.5 * lam * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return LogRegModel(w.detach(), None if b is None else b.detach(), mean, lam, variant)


def evaluate_logreg(models: Sequence[LogRegModel], x: torch.Tensor, y: torch.Tensor,
                    num_classes: int) -> list[dict[str, float]]:
    """Scores of every model (one per lambd) on features ``x``."""
    with torch.no_grad():
        topk = torch.stack([topk_predictions(m.logits(x)) for m in models])
    return scores_from_topk(topk, torch.as_tensor(y, dtype=torch.int64), num_classes)
