"""Weighted k-nearest-neighbour classifier on frozen features (DINO's rule), searched with faiss.

Features are L2-normalised float32, so inner product = cosine similarity (``IndexFlatIP``). Each of the
k neighbours votes for its class with weight ``exp(sim / T)`` (T = 0.07); classes are ranked by summed
votes. One search with the largest k serves every k. When k exceeds the training set it is clamped to
N_train and the clamp is reported.
"""

from __future__ import annotations

from collections.abc import Sequence

import faiss
import numpy as np
import torch
import torch.nn.functional as F

from ijepa_eval.probes.metrics import scores_from_topk, topk_predictions

ADD_ROWS = 65536  # training rows normalised and added to the index at a time


def _normalized(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """float32 rows scaled to unit L2 norm, in a new array: the caller's features are left untouched."""
    return F.normalize(torch.as_tensor(x).detach().to("cpu", torch.float32), dim=1).numpy()


def nearest_neighbours(train: torch.Tensor | np.ndarray, query: torch.Tensor | np.ndarray,
                       k: int) -> tuple[np.ndarray, np.ndarray]:
    """(similarities [Q, k], train rows [Q, k]) of the k most cosine-similar training rows, best first.

    The index holds its own copy of the training rows, so they are normalised chunk by chunk on the way in
    rather than as a second full-size copy.
    """
    train = torch.as_tensor(train)
    index = faiss.IndexFlatIP(train.shape[1])
    if torch.cuda.is_available() and hasattr(faiss, "StandardGpuResources"):  # faiss-gpu builds
        index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
    for chunk in train.split(ADD_ROWS):
        index.add(_normalized(chunk))
    return index.search(_normalized(query), min(k, train.shape[0]))


def vote_scores(sims: np.ndarray, neighbour_labels: np.ndarray, num_classes: int, temperature: float) -> torch.Tensor:
    """[Q, C] summed ``exp(sim / T)`` votes."""
    weights = torch.from_numpy(sims.astype(np.float64) / temperature).exp()
    votes = torch.zeros(sims.shape[0], num_classes, dtype=torch.float64)
    return votes.scatter_add_(1, torch.from_numpy(neighbour_labels.astype(np.int64)), weights)


def knn_topk(train: torch.Tensor | np.ndarray, train_labels: np.ndarray, query: torch.Tensor | np.ndarray,
             ks: Sequence[int], num_classes: int, temperature: float = 0.07) -> torch.Tensor:
    """[len(ks), Q, 5] predicted classes (best first) for every k; k > N_train uses all N_train neighbours."""
    train_labels = np.asarray(train_labels, dtype=np.int64)
    sims, rows = nearest_neighbours(train, query, max(ks))
    return torch.stack([
        topk_predictions(vote_scores(sims[:, :k], train_labels[rows[:, :k]], num_classes, temperature))
        for k in ks
    ])


def knn_scores(train: torch.Tensor | np.ndarray, train_labels: np.ndarray, query: torch.Tensor | np.ndarray,
               query_labels: np.ndarray, ks: Sequence[int], num_classes: int,
               temperature: float = 0.07) -> list[dict[str, float]]:
    """top1/top5/mean-per-class for every k in ``ks``."""
    topk = knn_topk(train, train_labels, query, ks, num_classes, temperature)
    return scores_from_topk(topk, torch.as_tensor(query_labels, dtype=torch.int64), num_classes)
