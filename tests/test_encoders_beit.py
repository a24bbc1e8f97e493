"""BEiT-style fine-tuned checkpoints (unilm beit/ and data2vec_vision beit/ ``run_class_finetuning.py``):
the features are the fine-tuned model's own path, computed independently in plain torch."""

from __future__ import annotations

import json

import pytest
import torch
from fixtures_checkpoints import TINY, beit_finetune_args, write_beit_finetuned_checkpoint
from reference_forwards import close, ln, plain_ln, pooled, raw_blocks

from ijepa_eval.cli import main
from ijepa_eval.encoders import load_encoder
from ijepa_eval.errors import CheckpointError

HEADS = TINY["num_heads"]


@pytest.fixture(scope="module")
def images():
    torch.manual_seed(0)
    return torch.randn(3, 3, TINY["img_size"], TINY["img_size"])


def test_beit_release_mean_of_patches_then_fc_norm(tmp_path, images):
    """beit_*_ft22kto1k.pth: {'model'} only; use_mean_pooling (the default) pools, then fc_norm."""
    path = tmp_path / "beit_base_patch16_224_pt22k_ft22kto1k.pth"
    sd = write_beit_finetuned_checkpoint(path, release=True)
    enc = load_encoder(path)
    assert (enc.info["format"], enc.final_norm, enc.info["branch"]) == ("beit", "pooled", None)
    arch = enc.info["arch"]
    assert arch["family"] == "beit" and arch["use_rel_pos_bias"] and arch["use_fc_norm"] and arch["num_heads"] == HEADS
    assert enc.info["dropped_keys"] == ["head.bias", "head.weight"] and "use_mean_pooling" in enc.info["notes"][0]
    want = pooled(raw_blocks(sd, images, HEADS)[-2:], "avg+cls", post_norm=lambda t: ln(t, sd, "fc_norm"))
    close(enc.forward_features(images, 2, "avg+cls"), want)


def test_beit_training_checkpoint_with_use_cls(tmp_path, images):
    """A --use_cls run's checkpoint-N.pth (args, optimizer, model_ema): norm on tokens; its head reads the cls token."""
    path = tmp_path / "checkpoint-29.pth"
    args = beit_finetune_args(use_mean_pooling=False, rel_pos_bias=False, abs_pos_emb=True, model_ema=True)
    sd = write_beit_finetuned_checkpoint(path, args=args, with_ema=True)
    enc = load_encoder(path)
    assert (enc.info["format"], enc.final_norm) == ("beit", "tokens")
    assert enc.info["arch"]["use_abs_pos_emb"] and not enc.info["arch"]["use_rel_pos_bias"]
    assert enc.info["meta"]["args"]["use_mean_pooling"] is False and enc.info["meta"]["epoch"] == 29
    close(enc.forward_features(images, 1, "cls"), ln(raw_blocks(sd, images, HEADS)[-1][:, 0], sd, "norm"))
    with pytest.raises(CheckpointError, match="holds one network"):
        load_encoder(path, branch="teacher")


def test_data2vec_finetuned_shared_table_and_linear_classifier(tmp_path, images):
    """data2vec's copy: shared relative position bias; --linear_classifier saves no fc_norm weights (no affine)."""
    tuned = write_beit_finetuned_checkpoint(tmp_path / "ft.pth", rel_pos="shared", args=beit_finetune_args({}))
    enc = load_encoder(tmp_path / "ft.pth")
    assert enc.info["format"] == "beit" and enc.info["arch"]["use_shared_rel_pos_bias"]
    want = pooled(raw_blocks(tuned, images, HEADS)[-1:], "avg", post_norm=lambda t: ln(t, tuned, "fc_norm"))
    close(enc.forward_features(images), want)

    linear = write_beit_finetuned_checkpoint(tmp_path / "lin.pth", rel_pos="shared", seed=1,
                                             args=beit_finetune_args({"linear_classifier": True}))
    assert not any(k.startswith(("norm.", "fc_norm.")) for k in linear)
    enc = load_encoder(tmp_path / "lin.pth")
    assert enc.final_norm == "pooled" and "linear_classifier" in enc.info["notes"][0]
    close(enc.forward_features(images, 2), pooled(raw_blocks(linear, images, HEADS)[-2:], "avg", post_norm=plain_ln))


def test_refused_and_inspected(tmp_path, capsys):
    write_beit_finetuned_checkpoint(tmp_path / "llw.pth", args=beit_finetune_args({"learn_layer_weights": True}))
    with pytest.raises(CheckpointError, match="--learn_layer_weights"):
        load_encoder(tmp_path / "llw.pth")
    write_beit_finetuned_checkpoint(tmp_path / "beit.pth", release=True)
    assert main(["inspect", str(tmp_path / "beit.pth")]) == 0
    text = capsys.readouterr().out
    assert "format:   beit (BEiT-style fine-tuned checkpoint" in text and "head.weight (1 keys)" in text
    assert main(["inspect", str(tmp_path / "beit.pth"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["final_norm"] == "pooled"
