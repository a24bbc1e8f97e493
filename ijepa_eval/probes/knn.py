"""Weighted k-nearest-neighbour classifier on frozen features (DINO's rule): exact cosine search.

Features are L2-normalised float32, so inner product = cosine similarity. Each of the k neighbours votes
for its class with weight ``exp(sim / T)`` (T = 0.07); classes are ranked by summed votes. One search with
the largest k serves every k. When k exceeds the training set it is clamped to N_train and the clamp is
reported.

Two exact searches give the same neighbours: on the host faiss's ``IndexFlatIP`` (BLAS, multithreaded); on
a GPU a chunked matmul + top-k in torch, as DINO's ``knn_classifier`` does — the training rows stay on the
GPU when they fit (else they stream through it in chunks) and queries go through in chunks whose
similarity block stays small.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import faiss
import numpy as np
import torch
import torch.nn.functional as F

from ijepa_eval.devices import DeviceLike, fits, normalize
from ijepa_eval.probes.metrics import scores_from_topk, topk_predictions

ADD_ROWS = 65536  # training rows normalised (and added to the index, or copied to the device) at a time
SIMILARITY_BYTES = 1 << 28  # one query chunk's [Q, N_train] float32 similarity block: 256 MiB


def _normalized(x: torch.Tensor | np.ndarray, device: DeviceLike = "cpu") -> torch.Tensor:
    """float32 rows scaled to unit L2 norm, in a new tensor: the caller's features are left untouched."""
    return F.normalize(torch.as_tensor(x).detach().to(device, torch.float32), dim=1)


def _faiss_search(train: torch.Tensor, query: torch.Tensor | np.ndarray, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The index holds its own copy of the training rows, normalised chunk by chunk on the way in rather than
    as a second full-size copy."""
    index = faiss.IndexFlatIP(train.shape[1])
    for chunk in train.split(ADD_ROWS):
        index.add(_normalized(chunk).numpy())
    sims, rows = index.search(_normalized(query).numpy(), k)
    return torch.from_numpy(sims), torch.from_numpy(rows).long()


def _training_blocks(train: torch.Tensor, device: torch.device) -> Iterator[tuple[int, torch.Tensor]]:
    """(first row, normalised rows on ``device``): one block when the training set fits (filled chunk by
    chunk, so no second full-size copy is made on the way), else chunks that each cross to the device once."""
    starts = range(0, len(train), ADD_ROWS)
    if not fits(train.numel() * 4, device):
        for start, chunk in zip(starts, train.split(ADD_ROWS), strict=True):
            yield start, _normalized(chunk, device)
        return
    block = torch.empty(train.shape, dtype=torch.float32, device=device)
    for start, chunk in zip(starts, train.split(ADD_ROWS), strict=True):
        block[start:start + len(chunk)] = _normalized(chunk, device)
    yield 0, block


def _torch_search(train: torch.Tensor, query: torch.Tensor | np.ndarray, k: int,
                  device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k by inner product on ``device``: for each training block and query chunk one matmul and a
    top-k, merged into every query's running best k (ties aside, the neighbours faiss finds)."""
    queries = _normalized(query, device)
    best_s = torch.full((len(queries), k), -math.inf, device=device)
    best_i = torch.full((len(queries), k), -1, dtype=torch.long, device=device)
    for start, block in _training_blocks(train, device):
        per_chunk = max(1, SIMILARITY_BYTES // (4 * len(block)))
        for q in range(0, len(queries), per_chunk):
            rows = slice(q, q + per_chunk)
            s, i = (queries[rows] @ block.T).topk(min(k, len(block)), dim=1)
            best_s[rows], pick = torch.cat([best_s[rows], s], 1).topk(k, dim=1)
            best_i[rows] = torch.cat([best_i[rows], i + start], 1).gather(1, pick)
    return best_s, best_i


def nearest_neighbours(train: torch.Tensor | np.ndarray, query: torch.Tensor | np.ndarray, k: int,
                       device: DeviceLike = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(similarities [Q, k], train rows [Q, k]) of the k most cosine-similar training rows, best first, on
    ``device``: faiss on the host, torch's matmul + top-k elsewhere. k > N_train is clamped to N_train."""
    train, device = torch.as_tensor(train), normalize(device)
    k = min(k, train.shape[0])
    if device.type == "cpu":
        return _faiss_search(train, query, k)
    return _torch_search(train, query, k, device)


def vote_scores(sims: torch.Tensor, neighbour_labels: torch.Tensor, num_classes: int,
                temperature: float) -> torch.Tensor:
    """[Q, C] summed ``exp(sim / T)`` votes (float64, on the similarities' device)."""
    weights = (sims.double() / temperature).exp()
    votes = torch.zeros(sims.shape[0], num_classes, dtype=torch.float64, device=sims.device)
    return votes.scatter_add_(1, neighbour_labels, weights)


def knn_topk(train: torch.Tensor | np.ndarray, train_labels: np.ndarray, query: torch.Tensor | np.ndarray,
             ks: Sequence[int], num_classes: int, temperature: float = 0.07,
             device: DeviceLike = "cpu") -> torch.Tensor:
    """[len(ks), Q, 5] predicted classes (best first, on the host) for every k; k > N_train uses all N_train
    neighbours. The search and the votes run on ``device``."""
    sims, rows = nearest_neighbours(train, query, max(ks), device)
    neighbour_labels = torch.as_tensor(np.asarray(train_labels, dtype=np.int64)).to(rows.device)[rows]
    return torch.stack([
        topk_predictions(vote_scores(sims[:, :k], neighbour_labels[:, :k], num_classes, temperature))
        for k in ks
    ]).cpu()


def knn_scores(train: torch.Tensor | np.ndarray, train_labels: np.ndarray, query: torch.Tensor | np.ndarray,
               query_labels: np.ndarray, ks: Sequence[int], num_classes: int,
               temperature: float = 0.07, device: DeviceLike = "cpu") -> list[dict[str, float]]:
    """top1/top5/mean-per-class for every k in ``ks``."""
    topk = knn_topk(train, train_labels, query, ks, num_classes, temperature, device)
    return scores_from_topk(topk, torch.as_tensor(query_labels, dtype=torch.int64), num_classes)
