"""The pretraining data pipeline: every batch is a pure function of (seed, step).

The sampler permutes by epoch and hands each rank its contiguous chunk of the global batch, crops are
seeded per image, and the masks are drawn for the step the items carry (not a call counter: workers finish
out of order). So a resumed run replays the exact same batches, and N ranks of batch B see exactly what
one process of batch N x B sees.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.data import Dataset, Sampler, default_collate
from torchvision import transforms as T

from ijepa_eval.errors import ConfigError, DatasetError
from ijepa_eval.pretrain.configs import DATASET_CLEVR_MINI, PretrainConfig
from ijepa_eval.pretrain.masks import MaskCollator

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class StepBatches(Sampler):
    """Yields, for each step from ``start_step``, this rank's share of the global batch.

    The global batch of step s is a slice of the permutation of epoch ``s // ipe``; rank r takes the r-th
    contiguous chunk, so the ranks together hold exactly the single-process batch. Items are
    ``(epoch, index, step)`` so that ``SeededCrops`` can seed each image's random crop and ``StepMasks``
    can draw the step's masks.
    """

    def __init__(
        self, n: int, batch_size: int, world_size: int, rank: int, seed: int, start_step: int, steps: int
    ):
        self.n, self.batch_size, self.world_size, self.rank = n, batch_size, world_size, rank
        self.seed, self.start_step, self.steps = seed, start_step, steps
        self.ipe = n // (batch_size * world_size)
        if self.ipe == 0:
            raise DatasetError(
                f"{n} images < one global batch of {batch_size * world_size}; lower batch_size"
            )

    def __len__(self) -> int:
        return max(0, self.steps - self.start_step)

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        perm, perm_epoch = None, -1
        gb = self.batch_size * self.world_size
        for step in range(self.start_step, self.steps):
            epoch, i = divmod(step, self.ipe)
            if epoch != perm_epoch:
                perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + epoch))
                perm_epoch = epoch
            chunk = perm[i * gb + self.rank * self.batch_size :][: self.batch_size]
            yield [(epoch, int(j), step) for j in chunk]


class SeededCrops(Dataset):
    """Applies ``transform`` under an RNG seeded by (seed, epoch, index): crops do not depend on workers.

    Returns ``(image, label, step)``: the step travels with the item to ``StepMasks``.
    """

    def __init__(self, dataset: Dataset, transform, seed: int):
        self.dataset, self.transform, self.seed = dataset, transform, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int, int]):
        epoch, index, step = item
        image, label = self.dataset[index]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(hash((self.seed, epoch, index)) & 0x7FFF_FFFF_FFFF_FFFF)
            return self.transform(image), label, step


class StepMasks:
    """``collate_fn``: ``((images, labels), masks_enc, masks_pred)`` with the masks of the batch's own step.

    DataLoader workers finish batches out of order, so the official shared call counter would hand a batch
    the masks of another step (and a resumed run other masks than the uninterrupted one).
    """

    def __init__(self, collator: MaskCollator):
        self.collator = collator

    def __call__(self, batch):
        (step,) = {s for _, _, s in batch}
        masks_enc, masks_pred = self.collator.sample_masks(len(batch), counter=step)
        return default_collate([(image, label) for image, label, _ in batch]), masks_enc, masks_pred


def pretrain_transform(crop_size: int, crop_scale: tuple[float, float]):
    """The official augmentation: RandomResizedCrop only (no flip, no colour), ImageNet normalisation."""
    return T.Compose(
        [
            T.Lambda(lambda im: im.convert("RGB")),
            T.RandomResizedCrop(crop_size, scale=tuple(crop_scale)),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def clevr_mini_root(cfg: PretrainConfig, out_dir: Path) -> Path:
    """Render CLEVR-mini under ``out_dir`` once (train = pretraining images, val = kNN monitor)."""
    from ijepa_eval.data.clevr_mini import render_clevr_mini

    root = out_dir / "clevr_mini"
    if not (root / "scenes" / "CLEVR_val_scenes.json").exists():
        render_clevr_mini(root, cfg.clevr_mini_images, max(32, cfg.clevr_mini_images // 5),
                          size=cfg.clevr_mini_size, seed=cfg.seed)  # fmt: skip
    return root


def build_dataset(cfg: PretrainConfig, out_dir: Path) -> Dataset:
    from ijepa_eval.data import get_dataset

    if cfg.dataset == DATASET_CLEVR_MINI:
        root = cfg.root or clevr_mini_root(cfg, out_dir)
        return get_dataset("clevr_count", root, split="train")
    if not cfg.root and not cfg.dataset.startswith("hf:"):
        raise ConfigError(f"dataset '{cfg.dataset}' needs a data root: pass --root DIR (or root=DIR)")
    return get_dataset(cfg.dataset, cfg.root or None, split="train")
