"""I-JEPA mask sampling: which patches the context encoder sees and which ones the predictor must predict.

``MaskCollator`` keeps the official collator's constructor, return value and semantics
(facebookresearch/ijepa ``src/masks/multiblock.py``): block sizes are drawn once per batch from a generator
seeded by a call counter, every image gets its own block positions, the context block loses every target
block, ``min_keep`` is enforced with retries that progressively relax the constraint, and all masks of a
batch are cut to the shortest one so they stack.

Differences, on purpose:

- Block starts are drawn from ``[0, H - h]`` inclusive. The official ``randint(0, H - h)`` excludes the
  upper end, so the last row/column never starts a block and, with the near-full (H-1)-sized context block,
  never appears in the context. ``official_bias=True`` restores the official range for ablations.
- Positions come from per-image generators seeded by ``(seed, counter, rank * B + i)`` instead of the
  process-global RNG, so a batch's masks depend only on the counter: resuming restores the counter, and
  ``world_size`` ranks of batch B see exactly the masks of one process of batch ``world_size * B``
  (whenever the truncation to the batch minimum is a no-op).
- ``strategy`` selects the paper's Table 6 alternatives: ``rasterized`` (one random quadrant is the
  context, the other three are targets), ``block`` (one target block of ``pred_mask_scale``, context is its
  complement) and ``random`` (a random ``pred_mask_scale`` fraction of patches is the target, context is the
  complement).
"""

from __future__ import annotations

import math
from multiprocessing import Value
from typing import Literal, get_args

import torch
from torch.utils.data import default_collate

from ijepa_eval.errors import ConfigError, unknown_choice

Strategy = Literal["multiblock", "rasterized", "block", "random"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)
_RETRIES_PER_RELAXATION = 20  # the official `og_timeout`


class MaskCollator:
    """``collate_fn`` returning ``(collated_batch, masks_enc, masks_pred)``.

    ``masks_enc`` holds ``nenc`` and ``masks_pred`` holds ``npred`` LongTensors of shape [B, K] with patch
    indices (row-major over the ``H x W`` patch grid).
    """

    def __init__(
        self,
        input_size: int | tuple[int, int] = (224, 224),
        patch_size: int = 16,
        enc_mask_scale: tuple[float, float] = (0.2, 0.8),
        pred_mask_scale: tuple[float, float] = (0.2, 0.8),
        aspect_ratio: tuple[float, float] = (0.3, 3.0),
        nenc: int = 1,
        npred: int = 2,
        min_keep: int = 4,
        allow_overlap: bool = False,
        *,
        strategy: Strategy = "multiblock",
        official_bias: bool = False,
        seed: int = 0,
        rank: int = 0,
    ):
        if strategy not in STRATEGIES:
            raise ConfigError(unknown_choice("mask strategy", strategy, STRATEGIES))
        if not isinstance(input_size, (tuple, list)):
            input_size = (input_size, input_size)
        self.patch_size = patch_size
        self.height, self.width = input_size[0] // patch_size, input_size[1] // patch_size
        self.enc_mask_scale = tuple(enc_mask_scale)
        self.pred_mask_scale = tuple(pred_mask_scale)
        self.aspect_ratio = tuple(aspect_ratio)
        self.nenc, self.npred = nenc, npred
        self.min_keep = min_keep
        self.allow_overlap = allow_overlap
        self.strategy = strategy
        self.official_bias = official_bias
        self.seed, self.rank = seed, rank
        # Shared with DataLoader workers (like the official collator), so each batch gets its own value.
        self._itr_counter = Value("i", -1)

    # -- counter (the only state; save it to resume) ------------------------------------------------------
    def step(self) -> int:
        with self._itr_counter.get_lock():
            self._itr_counter.value += 1
            return self._itr_counter.value

    def state_dict(self) -> dict:
        return {"counter": int(self._itr_counter.value)}

    def load_state_dict(self, state: dict) -> None:
        with self._itr_counter.get_lock():
            self._itr_counter.value = int(state["counter"])

    # -- sampling --------------------------------------------------------------------------------------------
    def _sample_block_size(self, g: torch.Generator, scale, aspect_ratio_scale) -> tuple[int, int]:
        # One uniform draw sets both scale and aspect ratio, as in the official code.
        u = torch.rand(1, generator=g).item()
        max_keep = int(self.height * self.width * (scale[0] + u * (scale[1] - scale[0])))
        aspect = aspect_ratio_scale[0] + u * (aspect_ratio_scale[1] - aspect_ratio_scale[0])
        h = int(round(math.sqrt(max_keep * aspect)))
        w = int(round(math.sqrt(max_keep / aspect)))
        # Blocks stay strictly smaller than the grid (official), which keeps its size statistics.
        return max(1, min(h, self.height - 1)), max(1, min(w, self.width - 1))

    def _block_start(self, g: torch.Generator, h: int, w: int) -> tuple[int, int]:
        extra = 0 if self.official_bias else 1
        top = int(torch.randint(0, self.height - h + extra, (1,), generator=g))
        left = int(torch.randint(0, self.width - w + extra, (1,), generator=g))
        return top, left

    def _sample_block_mask(self, g: torch.Generator, size, acceptable_regions=None):
        """Indices of one block (constrained to ``acceptable_regions``) and the block's complement."""
        h, w = size
        # The official loop never ends when the block itself holds <= min_keep patches (small grids).
        min_keep = min(self.min_keep, h * w - 1)
        tries, timeout = 0, _RETRIES_PER_RELAXATION
        while True:
            top, left = self._block_start(g, h, w)
            mask = torch.zeros((self.height, self.width), dtype=torch.int32)
            mask[top : top + h, left : left + w] = 1
            if acceptable_regions is not None:
                # After each `timeout` failures, drop one more constraint (official tolerance decay).
                for region in acceptable_regions[: max(len(acceptable_regions) - tries, 0)]:
                    mask *= region
            idx = torch.nonzero(mask.flatten()).squeeze(1)
            if len(idx) > min_keep:
                break
            timeout -= 1
            if timeout == 0:
                tries, timeout = tries + 1, _RETRIES_PER_RELAXATION
        complement = torch.ones((self.height, self.width), dtype=torch.int32)
        complement[top : top + h, left : left + w] = 0
        return idx, complement

    def _multiblock(self, g: torch.Generator, p_size, e_size):
        targets, complements = [], []
        for _ in range(self.npred):
            idx, comp = self._sample_block_mask(g, p_size)
            targets.append(idx)
            complements.append(comp)
        regions = None if self.allow_overlap else complements
        contexts = [self._sample_block_mask(g, e_size, regions)[0] for _ in range(self.nenc)]
        return contexts, targets

    def _rasterized(self, g: torch.Generator):
        rows, cols = torch.arange(self.height), torch.arange(self.width)
        hh, hw = self.height // 2, self.width // 2
        quads = []
        for r in (rows[:hh], rows[hh:]):
            for c in (cols[:hw], cols[hw:]):
                quads.append((r[:, None] * self.width + c[None, :]).flatten())
        pick = int(torch.randint(0, 4, (1,), generator=g))
        return [quads[pick]], [q for i, q in enumerate(quads) if i != pick]

    def _complement_pair(self, target: torch.Tensor):
        keep = torch.ones(self.height * self.width, dtype=torch.bool)
        keep[target] = False
        return [torch.nonzero(keep).squeeze(1)], [target.sort().values]

    def _single_block(self, g: torch.Generator, p_size):
        return self._complement_pair(self._sample_block_mask(g, p_size)[0])

    def _random(self, g: torch.Generator, ratio: float):
        n = self.height * self.width
        return self._complement_pair(torch.randperm(n, generator=g)[: int(round(ratio * n))])

    def sample_masks(
        self, batch_size: int, counter: int | None = None
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """``(masks_enc, masks_pred)`` for ``batch_size`` images of batch number ``counter``.

        ``counter=None`` advances the shared call counter (the official behaviour). With DataLoader workers
        batches are collated out of order, so a caller that knows the batch's step passes it instead.
        """
        counter = self.step() if counter is None else counter
        g = torch.Generator().manual_seed(counter)  # per-batch block sizes, seeded like the official code
        p_size = self._sample_block_size(g, self.pred_mask_scale, self.aspect_ratio)
        e_size = self._sample_block_size(g, self.enc_mask_scale, (1.0, 1.0))
        ratio = self.pred_mask_scale[0] + torch.rand(1, generator=g).item() * (
            self.pred_mask_scale[1] - self.pred_mask_scale[0]
        )
        per_image = []
        for i in range(batch_size):
            gi = torch.Generator().manual_seed(
                hash((self.seed, counter, self.rank * batch_size + i)) & 0x7FFF_FFFF_FFFF_FFFF
            )
            if self.strategy == "multiblock":
                per_image.append(self._multiblock(gi, p_size, e_size))
            elif self.strategy == "rasterized":
                per_image.append(self._rasterized(gi))
            elif self.strategy == "block":
                per_image.append(self._single_block(gi, p_size))
            else:
                per_image.append(self._random(gi, ratio))
        return _stack_truncated([c for c, _ in per_image]), _stack_truncated([t for _, t in per_image])

    def __call__(self, batch):
        collated_batch = default_collate(batch)
        masks_enc, masks_pred = self.sample_masks(len(batch))
        return collated_batch, masks_enc, masks_pred


def _stack_truncated(per_image: list[list[torch.Tensor]]) -> list[torch.Tensor]:
    """[image][mask] index lists -> one [B, K] tensor per mask, K = the batch's shortest mask."""
    k = min(len(m) for masks in per_image for m in masks)
    return [torch.stack([masks[j][:k] for masks in per_image]) for j in range(len(per_image[0]))]
