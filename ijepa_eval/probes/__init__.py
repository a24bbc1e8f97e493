"""Probes on frozen features: a jointly trained linear head grid, logistic regression, weighted kNN."""

from ijepa_eval.probes.knn import knn_scores, knn_topk, nearest_neighbours
from ijepa_eval.probes.linear import (
    HeadSpec,
    LinearGrid,
    LinearTrainConfig,
    OptimizerConfig,
    ScheduleConfig,
    evaluate_grid,
    fit_linear_grid,
    head_grid,
    predict_grid,
)
from ijepa_eval.probes.logreg import LogRegModel, LogRegVariant, evaluate_logreg, fit_logreg
from ijepa_eval.probes.metrics import scores_from_topk, topk_predictions
from ijepa_eval.probes.selection import class_balanced_holdout, few_shot_rows, select_head

__all__ = [
    "HeadSpec", "LinearGrid", "LinearTrainConfig", "LogRegModel", "LogRegVariant", "OptimizerConfig", "ScheduleConfig",
    "class_balanced_holdout", "evaluate_grid", "evaluate_logreg", "few_shot_rows", "fit_linear_grid",
    "fit_logreg", "head_grid", "knn_scores", "knn_topk", "nearest_neighbours", "predict_grid", "scores_from_topk",
    "select_head", "topk_predictions",
]
