"""The three probe kinds behind one small interface, so the runner's selection logic is written once.

A probe holds a set of heads (grid points); ``fit`` trains them all on some rows of the training features,
``predict`` returns every head's top-5 classes per example and ``score`` their top1/top5/mean-per-class.
For kNN a "head" is a (representation, k) pair and fitting just stores the training set. ``narrow`` turns a
recipe into the one-head recipe of a chosen head (``--seeds`` retrains just the selected probe).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, Sampler, Subset

from ijepa_eval.features import device_batches, encode, lent_encoder, parse_representation
from ijepa_eval.features.distributed import default_workers
from ijepa_eval.probes import (
    few_shot_rows,
    fit_linear_grid,
    fit_logreg,
    head_grid,
    knn_topk,
    predict_grid,
    scores_from_topk,
    topk_predictions,
)
from ijepa_eval.probes.headfile import SavedHead, head_from_grid, head_from_logreg
from ijepa_eval.probes.linear import LinearGrid
from ijepa_eval.protocols.recipes import GridSpec, Recipe

Features = Mapping[str, torch.Tensor]


class Probe:
    """What the runner needs of every probe kind."""

    heads: list[dict[str, Any]]
    num_classes: int

    def predict(self, feats: Features, labels: np.ndarray, rows: np.ndarray | None = None) -> torch.Tensor:
        """[H, N, k] top-k classes of every head on ``rows`` (default all), best first."""
        raise NotImplementedError

    def score(self, feats: Features, labels: np.ndarray, rows: np.ndarray | None = None) -> list[dict[str, float]]:
        y = labels if rows is None else labels[rows]
        return scores_from_topk(self.predict(feats, labels, rows), torch.from_numpy(y), self.num_classes)

    def train_scores(self) -> list[dict[str, float]]:
        return []

    def export_head(self, index: int, classes: list[str], context: dict[str, Any]) -> SavedHead | None:
        """Head ``index`` as a file-ready :class:`SavedHead`; None for probes without weights (kNN)."""
        return None


class LinearProbe(Probe):
    def __init__(self, recipe: Recipe, representations: list[str], num_classes: int, device: torch.device,
                 progress: bool):
        g = recipe.grid
        self.recipe, self.num_classes, self.device, self.progress = recipe, num_classes, device, progress
        self.specs = head_grid(representations, g.heads, g.lr_mults, g.wds)
        lr = recipe.train_config().lr  # base_lr rescaled to the batch size
        self.heads: list[dict[str, Any]] = [s.as_dict() | {"lr": s.lr_mult * lr} for s in self.specs]
        self.grid: LinearGrid | None = None
        self.train_stats: list[dict[str, float]] = []

    def fit(self, feats: Features, labels: np.ndarray, rows: np.ndarray) -> None:
        self.grid, self.train_stats = fit_linear_grid(
            feats, torch.from_numpy(labels), self.specs, self.recipe.train_config(), self.num_classes,
            index=torch.from_numpy(rows), seed=self.recipe.seed, device=self.device, progress=self.progress)

    def fit_augmented(self, encoder: Any, dataset: Any, dataset_rows: np.ndarray, num_workers: int | None) -> None:
        """The paper's exact recipe: every epoch re-encodes augmented images (``dataset`` has train_transform).

        A probe batch (16384 images for in1k_linear) is encoded in chunks of the recipe's
        ``extraction_batch_size`` and assembled from their pooled features: one forward over the whole batch
        would hold four fp32 block outputs of 16384 x 257 x 1280 (86 GB), and loader workers would build
        10 GB batches in shared memory. Same batches, same order, same augmentations: with in-process
        loading the result equals the one-shot encoding (tested). ``num_workers`` None = one loader worker
        per spare core: decoding and cropping in the main process would starve the GPU.
        """
        cfg, n_blocks = self.recipe.train_config(), self.recipe.n_last_blocks
        pools = ["avg", "cls"] if encoder.has_class_token else ["avg"]
        slices = {r: parse_representation(r, n_blocks, pools) for r in {s.representation for s in self.specs}}
        dims = {r: n * encoder.embed_dim for r, (_, n) in slices.items()}
        grid = LinearGrid(self.specs, dims, self.num_classes, cfg, seed=self.recipe.seed, device=self.device)
        cuda = self.device.type == "cuda"
        workers = default_workers(1) if num_workers is None else num_workers
        generator = torch.Generator().manual_seed(self.recipe.seed)
        rows = Subset(dataset, dataset_rows.tolist())
        full, rest = divmod(len(rows), cfg.batch_size)
        sizes = [cfg.batch_size] * full + ([rest] if rest > 1 else [])  # BatchNorm cannot normalise one row
        batches = BatchSampler(RandomSampler(rows, generator=generator), cfg.batch_size, drop_last=rest == 1)
        loader = DataLoader(rows, batch_sampler=Chunks(batches, self.recipe.extraction_batch_size),
                            generator=generator, num_workers=workers, pin_memory=cuda, persistent_workers=workers > 0)
        from tqdm.auto import tqdm

        def pooled_of(images: torch.Tensor) -> dict[str, torch.Tensor]:  # images: normalised, on the device
            return {pool: x.float() for pool, x in encode(encoder, images, n_last_blocks=n_blocks,
                                                          inference=False).items()}

        # Loader workers seed their augmentations from ``generator``; in-process loading draws them from
        # the global CPU generator, so seed a private copy of it (the caller's stream is left as it was).
        with torch.random.fork_rng(devices=[]), lent_encoder(encoder, self.device):
            torch.default_generator.manual_seed(self.recipe.seed)
            for _ in tqdm(range(cfg.epochs), desc="linear grid (augmented)", unit="ep", disable=not self.progress):
                chunks = device_batches(loader, self.device)  # uint8 chunks normalised on the device, one ahead
                for size in sizes:
                    pooled, labels = assemble(chunks, size, pooled_of)
                    reps = {r: pooled[pool][:, -n:].flatten(1) for r, (pool, n) in slices.items()}
                    grid.train_step(reps, labels, len(sizes))
                self.train_stats = grid.end_epoch()
        self.grid = grid

    def predict(self, feats: Features, labels: np.ndarray, rows: np.ndarray | None = None) -> torch.Tensor:
        assert self.grid is not None, "fit before predict"
        index = None if rows is None else torch.from_numpy(rows)
        return predict_grid(self.grid, feats, torch.from_numpy(labels), index=index)[0]

    def train_scores(self) -> list[dict[str, float]]:
        return self.train_stats

    def export_head(self, index: int, classes: list[str], context: dict[str, Any]) -> SavedHead:
        assert self.grid is not None, "fit before export"
        return head_from_grid(self.grid, index, classes, context)

    @staticmethod
    def narrow(recipe: Recipe, head: dict[str, Any]) -> Recipe:
        return dataclasses.replace(recipe, grid=GridSpec([head["head"]], [head["lr_mult"]], [head["wd"]]))


class Chunks(Sampler):
    """Every batch of ``batches`` as consecutive chunks of at most ``chunk`` indices, in order: the loader
    (and its workers' shared memory) holds one chunk at a time, and the consumer reassembles the batch."""

    def __init__(self, batches: BatchSampler, chunk: int) -> None:
        self.batches, self.chunk = batches, chunk

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batches:
            for start in range(0, len(batch), self.chunk):
                yield batch[start:start + self.chunk]

    def __len__(self) -> int:
        full, rest = divmod(len(self.batches.sampler), self.batches.batch_size)
        last = [] if self.batches.drop_last or not rest else [rest]
        return sum(-(-n // self.chunk) for n in [self.batches.batch_size] * full + last)


def assemble(chunks: Iterator, size: int, encode: Callable[[torch.Tensor], dict[str, torch.Tensor]]
             ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """(pooled features per pool [size, n, D], labels [size]) of the next ``size`` images of ``chunks``."""
    parts, labels, got = [], [], 0
    while got < size:
        images, y = next(chunks)
        parts.append(encode(images))
        labels.append(y)
        got += len(y)
    return {pool: torch.cat([p[pool] for p in parts]) for pool in parts[0]}, torch.cat(labels)


class LogRegProbe(Probe):
    def __init__(self, recipe: Recipe, representations: list[str], num_classes: int, device: torch.device,
                 progress: bool):
        self.recipe, self.num_classes, self.device = recipe, num_classes, device
        self.points = [(r, lam) for r in representations for lam in recipe.logreg.lambdas]
        self.heads = [{"name": f"{r}/logreg/lambda{lam:g}", "representation": r, "head": "logreg", "lambda": lam,
                       "variant": recipe.logreg.variant} for r, lam in self.points]
        self.models: list = []

    def fit(self, feats: Features, labels: np.ndarray, rows: np.ndarray) -> None:
        y = torch.from_numpy(labels[rows])
        spec = self.recipe.logreg
        self.models = [fit_logreg(feats[r][rows], y, self.num_classes, lam, variant=spec.variant,
                                  max_iter=spec.max_iter, device=self.device) for r, lam in self.points]

    @torch.no_grad()
    def predict(self, feats: Features, labels: np.ndarray, rows: np.ndarray | None = None) -> torch.Tensor:
        rows = np.arange(len(labels)) if rows is None else rows
        return torch.stack([topk_predictions(m.logits(feats[r][rows])).cpu()
                            for (r, _), m in zip(self.points, self.models, strict=True)])

    def export_head(self, index: int, classes: list[str], context: dict[str, Any]) -> SavedHead:
        return head_from_logreg(self.models[index], self.points[index][0], classes, context)

    @staticmethod
    def narrow(recipe: Recipe, head: dict[str, Any]) -> Recipe:
        return dataclasses.replace(recipe, logreg=dataclasses.replace(recipe.logreg, lambdas=[head["lambda"]]))


class KnnProbe(Probe):
    def __init__(self, recipe: Recipe, representations: list[str], num_classes: int, device: torch.device,
                 progress: bool):
        self.recipe, self.num_classes, self.device = recipe, num_classes, device
        self.representations = representations
        self.heads = [{"name": f"{r}/knn/k{k}", "representation": r, "head": "knn", "k": k,
                       "temperature": recipe.knn.temperature} for r in representations for k in recipe.knn.ks]
        self.train: tuple[Features, np.ndarray] | None = None

    def fit(self, feats: Features, labels: np.ndarray, rows: np.ndarray) -> None:
        if self.recipe.knn.shots is not None:
            rows = rows[few_shot_rows(labels[rows], self.recipe.knn.shots, seed=self.recipe.seed)]
        self.train = ({r: feats[r][rows] for r in self.representations}, labels[rows])
        for head in self.heads:
            head["k_effective"] = min(head["k"], len(rows))

    def predict(self, feats: Features, labels: np.ndarray, rows: np.ndarray | None = None) -> torch.Tensor:
        assert self.train is not None, "fit before predict"
        train_feats, train_labels = self.train
        rows = np.arange(len(labels)) if rows is None else rows
        knn = self.recipe.knn
        return torch.cat([knn_topk(train_feats[r], train_labels, feats[r][rows], knn.ks, self.num_classes,
                                   knn.temperature, self.device) for r in self.representations])

    @staticmethod
    def narrow(recipe: Recipe, head: dict[str, Any]) -> Recipe:
        return dataclasses.replace(recipe, knn=dataclasses.replace(recipe.knn, ks=[head["k"]]))


PROBES = {"linear": LinearProbe, "logreg": LogRegProbe, "knn": KnnProbe}
