"""Model pieces against independent computations: pos embed, masking, predictor layout, targets, schedules,
EMA, optimiser groups, one step of learning, and the official checkpoint layout."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ijepa_eval.pretrain.loop import ema_momentum, param_groups
from ijepa_eval.pretrain.model import (
    apply_masks,
    build_ijepa,
    ema_update,
    jepa_loss,
    make_targets,
    sincos_pos_embed_2d,
)
from ijepa_eval.schedules import cosine_wd, warmup_cosine_lr

TINY = dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=2, pred_depth=1, pred_emb_dim=24)


def test_sincos_pos_embed_matches_the_formula():
    dim, gh, gw = 16, 3, 5
    pe = sincos_pos_embed_2d(dim, gh, gw)
    assert pe.shape == (gh * gw, dim)
    row, col = 2, 4  # patch index row * gw + col
    freqs = [1.0 / 10000 ** (i / (dim // 4)) for i in range(dim // 4)]
    expected = ([math.sin(col * f) for f in freqs] + [math.cos(col * f) for f in freqs]
                + [math.sin(row * f) for f in freqs] + [math.cos(row * f) for f in freqs])  # fmt: skip
    assert torch.allclose(pe[row * gw + col], torch.tensor(expected), atol=1e-6)


def test_encoder_is_a_frozen_sincos_timm_vit():
    encoder, predictor, target = build_ijepa(**TINY)
    assert not encoder.pos_embed.requires_grad and not predictor.predictor_pos_embed.requires_grad
    assert torch.equal(encoder.pos_embed[0], sincos_pos_embed_2d(48, 4, 4))
    assert torch.equal(predictor.predictor_pos_embed[0], sincos_pos_embed_2d(24, 4, 4))
    assert all(not p.requires_grad for p in target.parameters())
    assert all(
        torch.equal(a, b)
        for a, b in zip(encoder.state_dict().values(), target.state_dict().values(), strict=True)
    )
    assert encoder.norm.eps == 1e-6 and encoder.blocks[0].attn.qkv.bias is not None
    assert predictor.predictor_blocks[0].attn.num_heads == 2  # predictor heads = encoder heads


def test_masked_encoder_equals_gathering_by_hand():
    encoder, _, _ = build_ijepa(**TINY)
    x = torch.randn(2, 3, 32, 32)
    masks = [torch.tensor([[0, 5, 7], [1, 2, 15]]), torch.tensor([[3, 4, 6], [8, 9, 10]])]
    tokens = encoder.patch_embed(x) + encoder.pos_embed
    expected = torch.cat([torch.stack([tokens[b, m[b]] for b in range(2)]) for m in masks])
    expected = encoder.norm(encoder.blocks(expected))
    assert torch.allclose(encoder(x, masks), expected, atol=1e-5)
    assert torch.equal(apply_masks(tokens, masks)[3], tokens[1, masks[1][1]])  # row m * B + b


def test_predictor_and_targets_follow_the_official_row_layout():
    encoder, predictor, target = build_ijepa(**TINY)
    x = torch.randn(2, 3, 32, 32)
    masks_enc = [
        torch.tensor([[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]),
        torch.tensor([[10, 11, 12, 13, 14], [0, 2, 4, 6, 8]]),
    ]
    masks_pred = [
        torch.tensor([[15, 14], [1, 3]]),
        torch.tensor([[9, 8], [12, 13]]),
        torch.tensor([[5, 6], [7, 11]]),
    ]
    preds = predictor(encoder(x, masks_enc), masks_enc, masks_pred)
    targets = make_targets(target, x, masks_pred, nenc=2)
    assert preds.shape == targets.shape == (3 * 2 * 2, 2, 48)
    feats = F.layer_norm(target(x), (48,))
    pos = predictor.predictor_pos_embed[0]
    for p in range(3):
        for e in range(2):
            for b in range(2):
                row = (p * 2 + e) * 2 + b
                assert torch.allclose(targets[row], feats[b, masks_pred[p][b]], atol=1e-6)
                # the same prediction computed for one (context, target block) pair alone
                ctx = (
                    predictor.predictor_embed(encoder(x[b : b + 1], [masks_enc[e][b : b + 1]])[0])
                    + pos[masks_enc[e][b]]
                )
                queries = predictor.mask_token[0] + pos[masks_pred[p][b]]
                h = torch.cat([ctx, queries])[None]
                for blk in predictor.predictor_blocks:
                    h = blk(h)
                alone = predictor.predictor_proj(predictor.predictor_norm(h))[0, -2:]
                assert torch.allclose(preds[row], alone, atol=1e-5)


def test_losses():
    a, b = torch.tensor([0.0, 0.5, 3.0]), torch.zeros(3)
    assert jepa_loss(a, b).item() == pytest.approx((0 + 0.5 * 0.25 + 2.5) / 3)  # smooth L1, beta 1
    assert jepa_loss(a, b, "l2").item() == pytest.approx((0.25 + 9) / 3)


def test_schedules_match_the_official_closed_forms():
    warm, total = 10, 100
    assert warmup_cosine_lr(0, warm, total, 2e-4, 1e-3, 1e-6) == pytest.approx(2e-4 + 1 / 10 * 8e-4)
    assert warmup_cosine_lr(8, warm, total, 2e-4, 1e-3, 1e-6) == pytest.approx(2e-4 + 9 / 10 * 8e-4)
    assert warmup_cosine_lr(9, warm, total, 2e-4, 1e-3, 1e-6) == pytest.approx(1e-3)  # peak after warmup
    mid = warm + (total - warm) // 2 - 1  # s + 1 halfway through the cosine
    assert warmup_cosine_lr(mid, warm, total, 2e-4, 1e-3, 1e-6) == pytest.approx(1e-6 + (1e-3 - 1e-6) * 0.5)
    assert warmup_cosine_lr(total - 1, warm, total, 2e-4, 1e-3, 1e-6) == pytest.approx(1e-6)
    assert cosine_wd(49, 100, 0.04, 0.4) == pytest.approx(0.22)
    assert cosine_wd(99, 100, 0.04, 0.4) == pytest.approx(0.4)
    assert ema_momentum(0, 100, (0.996, 1.0)) == 0.996
    assert ema_momentum(50, 100, (0.996, 1.0)) == pytest.approx(0.998)
    assert ema_momentum(100, 100, (0.996, 1.0)) == 1.0


def test_ema_update_closed_form():
    online, target = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    before = [p.clone() for p in target.parameters()]
    ema_update(target, online, 0.9)
    for t, b, o in zip(target.parameters(), before, online.parameters(), strict=True):
        assert torch.allclose(t, 0.9 * b + 0.1 * o)


def test_param_groups_exclude_biases_and_norms_from_weight_decay():
    encoder, predictor, _ = build_ijepa(**TINY)
    groups = param_groups(encoder, predictor)
    names = {id(p): n for m in (encoder, predictor) for n, p in m.named_parameters()}
    decayed = {names[id(p)] for g in groups if not g["WD_exclude"] for p in g["params"]}
    excluded = {names[id(p)] for g in groups if g["WD_exclude"] for p in g["params"]}
    assert "blocks.0.attn.qkv.weight" in decayed and "mask_token" in decayed
    assert {"blocks.0.attn.qkv.bias", "norm.weight", "predictor_norm.weight"} <= excluded
    # official init_opt keeps the frozen pos embeds in the decayed groups (so `opt` indexes like theirs)
    assert {"pos_embed", "predictor_pos_embed"} <= decayed
    assert len(decayed) + len(excluded) == len(names) == sum(len(g["params"]) for g in groups)
    assert [len(g["params"]) for g in groups][:2] == [2 + 4 * 2, 4 + 4 * 1]  # >= 2-D non-bias: 4 a block


def test_frozen_pos_embeds_stay_put_through_optimizer_steps():
    encoder, predictor, target = build_ijepa(**TINY)
    before = encoder.pos_embed.detach().clone(), predictor.predictor_pos_embed.detach().clone()
    opt = torch.optim.AdamW(param_groups(encoder, predictor), lr=1e-2, weight_decay=0.5)
    x, masks_enc, masks_pred = (
        torch.randn(2, 3, 32, 32),
        [torch.arange(8).repeat(2, 1)],
        [torch.arange(8, 12).repeat(2, 1)],
    )
    for _ in range(2):
        jepa_loss(
            predictor(encoder(x, masks_enc), masks_enc, masks_pred), make_targets(target, x, masks_pred, 1)
        ).backward()
        opt.step()
    assert torch.equal(encoder.pos_embed, before[0]) and torch.equal(predictor.predictor_pos_embed, before[1])


def test_one_optimizer_step_lowers_the_loss_on_a_fixed_batch():
    encoder, predictor, target = build_ijepa(**TINY)
    x = torch.randn(4, 3, 32, 32)
    masks_enc = [torch.arange(8).repeat(4, 1)]
    masks_pred = [torch.arange(10, 14).repeat(4, 1), torch.arange(12, 16).repeat(4, 1)]
    opt = torch.optim.AdamW(param_groups(encoder, predictor), lr=1e-3)

    def loss():
        return jepa_loss(
            predictor(encoder(x, masks_enc), masks_enc, masks_pred), make_targets(target, x, masks_pred, 1)
        )

    first = loss()
    first.backward()
    opt.step()
    assert loss().item() < first.item()


def test_official_key_names():
    encoder, predictor, _ = build_ijepa(**TINY)
    expected_encoder = {
        "pos_embed",
        "patch_embed.proj.weight",
        "patch_embed.proj.bias",
        "norm.weight",
        "norm.bias",
    }
    block_keys = [
        f"{m}.{t}"
        for m in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2")
        for t in ("weight", "bias")
    ]
    expected_encoder |= {f"blocks.{i}.{k}" for i in range(2) for k in block_keys}
    assert set(encoder.state_dict()) == expected_encoder
    expected_predictor = {"mask_token", "predictor_pos_embed", "predictor_embed.weight", "predictor_embed.bias",
                          "predictor_norm.weight", "predictor_norm.bias", "predictor_proj.weight", "predictor_proj.bias"}  # fmt: skip
    expected_predictor |= {f"predictor_blocks.0.{k}" for k in block_keys}
    assert set(predictor.state_dict()) == expected_predictor
    assert predictor.state_dict()["mask_token"].shape == (1, 1, 24)
    assert encoder.state_dict()["pos_embed"].shape == (1, 16, 48)
    assert np.prod(predictor.state_dict()["predictor_proj.weight"].shape) == 24 * 48
