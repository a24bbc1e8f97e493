"""MaskCollator: official semantics (disjointness, sizes, batch truncation, statistics), the start-bias fix,
the Table 6 strategies, and determinism in the counter."""

import math

import pytest
import torch

from ijepa_eval.errors import ConfigError
from ijepa_eval.pretrain.masks import MaskCollator

PAPER = dict(enc_mask_scale=(0.85, 1.0), pred_mask_scale=(0.15, 0.2), aspect_ratio=(0.75, 1.5), nenc=1, npred=4,
             min_keep=10, allow_overlap=False)  # fmt: skip


def paper_collator(**kw) -> MaskCollator:
    return MaskCollator(input_size=224, patch_size=16, **{**PAPER, **kw})  # 14 x 14 grid


def test_return_value_matches_the_official_collator():
    batch = [(torch.full((3, 4, 4), float(i)), i) for i in range(5)]
    collated, masks_enc, masks_pred = paper_collator()(batch)
    assert collated[0].shape == (5, 3, 4, 4) and collated[1].tolist() == [0, 1, 2, 3, 4]
    assert len(masks_enc) == 1 and len(masks_pred) == 4
    for m in masks_enc + masks_pred:
        assert m.dtype == torch.int64 and m.ndim == 2 and m.shape[0] == 5
    assert len({m.shape[1] for m in masks_pred}) == 1  # every target mask cut to the batch minimum


def test_context_and_targets_are_disjoint_and_sized_by_the_scales():
    collator = paper_collator()
    for _ in range(20):
        masks_enc, masks_pred = collator.sample_masks(8)
        for b in range(8):
            ctx = set(masks_enc[0][b].tolist())
            assert len(ctx) == masks_enc[0].shape[1] > 10  # unique indices, min_keep respected
            for m in masks_pred:
                assert not ctx & set(m[b].tolist())
        # target block area = h * w with h, w from scale in [0.15, 0.2] of 196 and aspect in [0.75, 1.5]
        k = masks_pred[0].shape[1]
        assert 0.15 * 196 * 0.7 <= k <= 0.2 * 196 * 1.3


def test_official_statistics_on_a_14x14_grid():
    collator = paper_collator()
    ctx, tgt = [], []
    for _ in range(60):
        masks_enc, masks_pred = collator.sample_masks(32)
        ctx.append(masks_enc[0].shape[1])
        tgt.append(masks_pred[0].shape[1])
    assert 45 <= sum(ctx) / len(ctx) <= 70  # paper code: ~54 at batch 128 per GPU
    assert 28 <= sum(tgt) / len(tgt) <= 38  # ~33


def coverage(collator: MaskCollator, batches: int = 150) -> tuple[torch.Tensor, torch.Tensor]:
    n = collator.height * collator.width
    ctx, tgt = torch.zeros(n), torch.zeros(n)
    for _ in range(batches):
        masks_enc, masks_pred = collator.sample_masks(8)
        ctx[masks_enc[0].flatten()] += 1
        for m in masks_pred:
            tgt[m.flatten()] += 1
    return ctx.view(collator.height, collator.width), tgt.view(collator.height, collator.width)


def test_every_cell_is_reachable_once_the_start_bias_is_fixed():
    ctx, tgt = coverage(paper_collator())
    assert (ctx > 0).all() and (tgt > 0).all()


def test_official_bias_never_reaches_the_last_row_and_column():
    ctx, tgt = coverage(paper_collator(official_bias=True))
    for counts in (ctx, tgt):
        assert counts[-1, :].sum() == 0 and counts[:, -1].sum() == 0
        assert (counts[:-1, :-1] > 0).all()


def test_masks_are_a_function_of_the_counter():
    a = paper_collator()
    first, second = a.sample_masks(4), a.sample_masks(4)
    resumed = paper_collator()
    resumed.load_state_dict(a.state_dict() | {"counter": 0})  # as after one batch
    again = resumed.sample_masks(4)
    as_lists = lambda masks: [[m.tolist() for m in group] for group in masks]  # noqa: E731
    assert as_lists(again) == as_lists(second) != as_lists(first)
    explicit = paper_collator()
    assert as_lists(explicit.sample_masks(4, counter=1)) == as_lists(second)  # a batch's own step
    assert explicit.state_dict()["counter"] == -1  # ... leaves the shared counter alone


def test_rank_shards_see_the_single_process_masks():
    # fixed-size blocks (allow_overlap) make batch truncation a no-op, so the union of 2 ranks of batch 3
    # equals one process of batch 6
    kw = dict(allow_overlap=True)
    whole = paper_collator(**kw).sample_masks(6)
    parts = [paper_collator(rank=r, **kw).sample_masks(3) for r in (0, 1)]
    for group in (0, 1):
        for j, m in enumerate(whole[group]):
            assert torch.equal(m, torch.cat([p[group][j] for p in parts]))


def test_min_keep_larger_than_the_block_does_not_hang():
    collator = MaskCollator(input_size=32, patch_size=8, **{**PAPER, "min_keep": 10})  # 4 x 4 grid
    masks_enc, masks_pred = collator.sample_masks(4)
    assert masks_pred[0].shape[1] >= 1 and masks_enc[0].shape[1] >= 1


@pytest.mark.parametrize(
    "strategy, n_targets, target_frac",
    [("rasterized", 3, 0.25), ("block", 1, None), ("random", 1, 0.6)],
)
def test_table6_strategies_partition_the_grid(strategy, n_targets, target_frac):
    collator = paper_collator(strategy=strategy, pred_mask_scale=(0.6, 0.6))
    masks_enc, masks_pred = collator.sample_masks(4)
    assert len(masks_enc) == 1 and len(masks_pred) == n_targets
    for b in range(4):
        ctx = set(masks_enc[0][b].tolist())
        tgt = set().union(*(set(m[b].tolist()) for m in masks_pred))
        assert not ctx & tgt
        if strategy != "block":  # block: the complement may be cut to the batch minimum
            assert len(ctx) + len(tgt) == 196
        if target_frac:
            assert math.isclose(masks_pred[0].shape[1] / 196, target_frac, abs_tol=0.03)


def test_unknown_strategy_is_a_config_error():
    with pytest.raises(ConfigError, match="Did you mean 'random'"):
        paper_collator(strategy="randm")
