"""The paper's other baselines in their release layouts (MSN, data2vec vision, CAE, MAE fine-tuned) and
transformers Data2VecVision folders: features equal an independent forward, inspect and compare work."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from fixtures_checkpoints import (
    TINY,
    beit_style_state_dict,
    write_cae_checkpoint,
    write_data2vec_checkpoint,
    write_hf_data2vec,
    write_ijepa_checkpoint,
    write_mae_finetuned_checkpoint,
    write_msn_checkpoint,
    write_safetensors,
)
from reference_forwards import close, ln, plain_ln, pooled, raw_blocks

from ijepa_eval.cli import main
from ijepa_eval.encoders import load_encoder
from ijepa_eval.encoders.encoder import FEATURE_PATHS
from ijepa_eval.errors import ArchitectureError, CheckpointError


@pytest.fixture(scope="module")
def images():
    torch.manual_seed(0)
    return torch.randn(3, 3, TINY["img_size"], TINY["img_size"])


# --------------------------------------------------------------------------------------------- MSN

@pytest.mark.parametrize("ddp", [True, False])
def test_msn_target_by_default_read_as_its_own_eval_reads_it(tmp_path, images, ddp):
    path = tmp_path / "msn.pth.tar"
    nets = write_msn_checkpoint(path, ddp=ddp)
    enc = load_encoder(path)
    assert (enc.info["format"], enc.info["branch"], enc.final_norm) == ("msn", "target", "none")
    assert enc.info["arch"]["final_norm"] is False and enc.info["meta"]["temperature"] == 0.1
    dropped = enc.info["dropped_keys"]
    assert {"prototypes", "norm.weight", "fc.fc3.weight", "fc.bn2.running_var"} <= set(dropped)
    outs = raw_blocks(nets["target"], images, TINY["num_heads"])
    # MSN forward_blocks: class tokens of the last blocks, no norm, concatenated oldest first
    close(enc.forward_features(images, 2, "cls"), torch.cat([o[:, 0] for o in outs[-2:]], dim=1))
    close(enc.forward_features(images, 1, "avg"), outs[-1][:, 1:].mean(1))
    anchor = load_encoder(path, branch="anchor")
    close(anchor.forward_features(images, 1, "cls"), raw_blocks(nets["anchor"], images, TINY["num_heads"])[-1][:, 0])


def test_msn_final_norm_on_request(tmp_path, images):
    path = tmp_path / "msn.pth.tar"
    nets = write_msn_checkpoint(path)
    enc = load_encoder(path, arch={"final_norm": True})
    assert enc.final_norm == "tokens" and "norm.weight" not in enc.info["dropped_keys"]
    sd = nets["target"]
    want = pooled(raw_blocks(sd, images, TINY["num_heads"])[-2:], "avg+cls", token_norm=lambda t: ln(t, sd, "norm"))
    close(enc.forward_features(images, 2, "avg+cls"), want)
    with pytest.raises(CheckpointError, match="branch 'context'.*anchor"):
        load_encoder(path, branch="context")


# ----------------------------------------------------------------------------------- MAE fine-tuned

def test_mae_finetuned_pools_then_fc_norm(tmp_path, images):
    path = tmp_path / "mae_ft.pth"
    sd = write_mae_finetuned_checkpoint(path)
    enc = load_encoder(path)
    assert enc.final_norm == "pooled" and enc.info["arch"]["fc_norm"] is True
    assert enc.info["dropped_keys"] == ["head.bias", "head.weight"] and "global_pool" in enc.info["notes"][0]
    want = pooled(raw_blocks(sd, images, TINY["num_heads"])[-3:], "avg+cls", post_norm=lambda t: ln(t, sd, "fc_norm"))
    close(enc.forward_features(images, 3, "avg+cls"), want)


# ------------------------------------------------------------------------------------------ data2vec

def test_data2vec_student_by_default_mean_then_layernorm(tmp_path, images):
    path = tmp_path / "checkpoint-799.pth"
    nets = write_data2vec_checkpoint(path)
    enc = load_encoder(path)
    assert (enc.info["format"], enc.info["branch"], enc.final_norm) == ("data2vec", "student", "pooled")
    arch = enc.info["arch"]
    assert arch["family"] == "beit" and arch["use_shared_rel_pos_bias"] and not arch["use_abs_pos_emb"]
    # norm.* is trained (the student's predictions pass it before lm_head) but data2vec's fine-tuning never loads it
    assert enc.info["dropped_keys"] == ["lm_head.bias", "lm_head.weight", "mask_token", "norm.bias", "norm.weight"]
    assert enc.info["meta"]["args"]["ema_decay"] == 0.9998 and "linear probe" in enc.info["notes"][0]
    for branch in ("student", "teacher"):
        outs = raw_blocks(nets[branch], images, 3)
        want = pooled(outs[-2:], "avg+cls", post_norm=plain_ln)  # modeling_finetune linear_classifier fc_norm
        close(load_encoder(path, branch=branch).forward_features(images, 2, "avg+cls"), want)


def test_data2vec_without_ema_and_per_block_tables(tmp_path, images):
    path = tmp_path / "d2v.pth"
    sd = write_data2vec_checkpoint(path, with_ema=False, rel_pos="block", abs_pos=True)["student"]
    enc = load_encoder(path)
    assert enc.info["branch"] is None and enc.info["arch"]["use_rel_pos_bias"]
    close(enc.forward_features(images, 1), plain_ln(raw_blocks(sd, images, 3)[-1][:, 1:].mean(1)))
    with pytest.raises(CheckpointError, match="holds one network"):
        load_encoder(path, branch="teacher")


def test_nonstandard_relative_position_index_is_refused(tmp_path):
    path = tmp_path / "d2v.pth"
    write_data2vec_checkpoint(path)
    obj = torch.load(path, weights_only=False)
    obj["model"]["rel_pos_bias.relative_position_index"] = obj["model"]["rel_pos_bias.relative_position_index"].flip(0)
    torch.save(obj, path)
    with pytest.raises(CheckpointError, match="relative position index"):
        load_encoder(path)


# ----------------------------------------------------------------------------------------------- CAE

def test_cae_heads_from_its_args_and_final_norm_on_tokens(tmp_path, images):
    path = tmp_path / "cae_small_1600ep.pth"
    sd = write_cae_checkpoint(path)
    enc = load_encoder(path)
    assert (enc.info["format"], enc.final_norm, enc.info["arch"]["num_heads"]) == ("cae", "tokens", 12)
    assert "mask_token" in enc.info["dropped_keys"]
    assert any(k.startswith("pretext_neck.regressor_blocks.") for k in enc.info["dropped_keys"])
    want = pooled(raw_blocks(sd, images, 12)[-2:], "avg+cls", token_norm=lambda t: ln(t, sd, "norm"))
    close(enc.forward_features(images, 2, "avg+cls"), want)


def test_plain_beit_state_dict_and_arch_checks(tmp_path, images):
    sd = beit_style_state_dict(3, rel_pos="block")
    path = tmp_path / "beit.safetensors"
    write_safetensors(path, sd)
    enc = load_encoder(path)
    assert enc.info["format"] == "state_dict" and enc.final_norm == "tokens"
    close(enc.forward_features(images, 1, "cls"), ln(raw_blocks(sd, images, 3)[-1][:, 0], sd, "norm"))
    with pytest.raises(ArchitectureError, match="unknown Beit kwargs in arch: heads"):
        load_encoder(path, arch={"heads": 4})
    with pytest.raises(ArchitectureError, match="dict of Beit kwargs"):
        load_encoder(path, arch="vit_tiny_patch16_224")


# ----------------------------------------------------------------------------- transformers folders

HF_VARIANTS = {  # name: (model class, config overrides, final norm)
    "model_layernorm": ("Data2VecVisionModel", dict(use_mean_pooling=False, use_shared_relative_position_bias=True),
                        "tokens"),
    "classifier_pooler": ("Data2VecVisionForImageClassification",
                          dict(use_mean_pooling=True, use_relative_position_bias=True,
                               use_absolute_position_embeddings=True, num_labels=5), "pooled"),
    "model_no_norm": ("Data2VecVisionModel", dict(use_mean_pooling=True, use_relative_position_bias=True), "none"),
}


def hf_reference(model, images, n: int, final_norm: str) -> torch.Tensor:
    """The model's own forward in transformers: hidden_states through its final norm, mean over patches."""
    base = getattr(model, "data2vec_vision", model)
    with torch.no_grad():
        out = base(pixel_values=images, output_hidden_states=True)
        if final_norm == "tokens":  # last_hidden_state is hidden_states[-1] through the layernorm
            close(out.last_hidden_state, base.layernorm(out.hidden_states[-1]))
            return pooled(list(out.hidden_states[-n:]), "avg", token_norm=base.layernorm)
        if final_norm == "pooled":
            close(out.pooler_output, base.pooler.layernorm(out.hidden_states[-1][:, 1:].mean(1)))
            return pooled(list(out.hidden_states[-n:]), "avg", post_norm=base.pooler.layernorm)
        close(out.last_hidden_state, out.hidden_states[-1])  # no final norm anywhere
        return pooled(list(out.hidden_states[-n:]), "avg")


@pytest.mark.parametrize("variant", sorted(HF_VARIANTS))
def test_hf_data2vec_vision_folder_matches_transformers(tmp_path, images, variant):
    cls_name, overrides, final_norm = HF_VARIANTS[variant]
    model = write_hf_data2vec(tmp_path / variant, cls_name, **overrides)
    enc = load_encoder(tmp_path / variant)
    assert (enc.info["format"], enc.final_norm, enc.info["arch"]["num_heads"]) == ("hf-data2vec-vision", final_norm, 4)
    assert enc.info["arch"]["norm_eps"] == 1e-12 and len(enc.info["sha256"]) == 64
    for n in (1, 3):
        close(enc.forward_features(images, n), hf_reference(model, images, n, final_norm))
    if cls_name.endswith("Classification"):
        assert enc.info["dropped_keys"] == ["classifier.bias", "classifier.weight"]


def test_hf_folder_as_pytorch_model_bin_and_bad_folders(tmp_path, images):
    from safetensors.torch import load_file

    folder = tmp_path / "d2v"
    model = write_hf_data2vec(folder, "Data2VecVisionModel", use_mean_pooling=False)
    tensors = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    torch.save(tensors, folder / "pytorch_model.bin")  # how transformers < 4.35 saved by default
    close(load_encoder(folder).forward_features(images, 1), hf_reference(model, images, 1, "tokens"))
    (folder / "pytorch_model.bin").unlink()
    with pytest.raises(CheckpointError, match="none of model.safetensors"):
        load_encoder(folder)
    (folder / "config.json").unlink()
    with pytest.raises(CheckpointError, match="without config.json"):
        load_encoder(folder)


# --------------------------------------------------------------------------------- inspect, compare

def test_inspect_says_what_the_features_are(tmp_path, capsys):
    paths = {"msn": tmp_path / "msn.pth.tar", "data2vec": tmp_path / "d2v.pth", "cae": tmp_path / "cae.pth"}
    write_msn_checkpoint(paths["msn"])
    write_data2vec_checkpoint(paths["data2vec"])
    write_cae_checkpoint(paths["cae"])
    write_hf_data2vec(tmp_path / "hf", "Data2VecVisionForImageClassification", use_mean_pooling=True)
    expected = {"msn": ("none", "norm.weight (1 keys)"), "data2vec": ("pooled", "lm_head.weight (1 keys)"),
                "cae": ("tokens", "pretext_neck.regressor_blocks"), "hf": ("pooled", "classifier.weight (1 keys)")}
    for name, (final_norm, dropped) in expected.items():
        source = str(paths.get(name, tmp_path / name))
        assert main(["inspect", source]) == 0
        text = capsys.readouterr().out
        assert f"features: {FEATURE_PATHS[final_norm]}" in text and "\n  note: " in text and dropped in text
        assert main(["inspect", source, "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["final_norm"] == final_norm and report["notes"]
    assert main(["inspect", str(paths["msn"]), "--arch", '{"final_norm": true}', "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["final_norm"] == "tokens"


def test_compare_runs_data2vec_beside_ijepa(tmp_path, capsys):
    from ijepa_eval.data.synthetic import write_imagenet

    root = write_imagenet(tmp_path / "imagenet", n_classes=3, n_train_per_class=8, n_val_per_class=3)
    write_ijepa_checkpoint(tmp_path / "ijepa.pth.tar", depth=4)  # the protocol reads concatPOOL4
    write_data2vec_checkpoint(tmp_path / "d2v.pth", depth=4)
    out = tmp_path / "cmp"
    assert main(["compare", str(tmp_path / "ijepa.pth.tar"), str(tmp_path / "d2v.pth"), "--protocols", "knn",
                 "--labels", "I-JEPA,data2vec", "--root", str(root), "--out", str(out), "--cache-dir",
                 str(tmp_path / "cache"), "--device", "cpu"]) == 0
    flat = pd.read_csv(out / "compare.csv", dtype=str)
    assert flat["model"].tolist() == ["I-JEPA", "data2vec"] and flat["knn"].notna().all()
    results = {json.loads(p.read_text())["model"]["label"]: json.loads(p.read_text()) for p in out.glob("*knn.json")}
    assert results["data2vec"]["model"]["format"] == "data2vec" and results["data2vec"]["model"]["branch"] == "student"
    assert results["data2vec"]["model"]["arch"]["family"] == "beit" and results["I-JEPA"]["model"]["branch"] == "target"


@pytest.mark.parametrize("use_fc_norm", [True, False])
def test_in_memory_timm_beit_follows_timms_pooled_path(images, use_fc_norm):
    """encoder_from_vit on a timm Beit: avg features are timm's own forward_head(pre_logits) for global_pool avg."""
    from timm.models.beit import Beit

    from ijepa_eval.encoders import build_vit, encoder_from_vit

    torch.manual_seed(0)
    kwargs = dict(img_size=48, patch_size=16, embed_dim=64, depth=2, num_heads=4, init_values=0.1,
                  use_abs_pos_emb=False, use_rel_pos_bias=True, use_fc_norm=use_fc_norm)
    timm_model = Beit(**kwargs, num_classes=0, global_pool="avg").eval()
    with torch.no_grad():
        for p in timm_model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    enc = encoder_from_vit(timm_model)
    assert enc.final_norm == ("pooled" if use_fc_norm else "tokens") and enc.info["arch"]["family"] == "beit"
    with torch.no_grad():
        tokens = timm_model.forward_features(images)
        if use_fc_norm:
            close(enc.forward_features(images), timm_model.forward_head(tokens, pre_logits=True))
        else:  # timm's avg pool then no fc_norm: the token norm came first
            close(enc.forward_features(images), tokens[:, 1:].mean(1))
    rebuilt = build_vit(enc.info["arch"])  # the recorded arch rebuilds the same model
    rebuilt.load_state_dict(timm_model.state_dict())
    close(encoder_from_vit(rebuilt).forward_features(images, 2, "avg+cls"), enc.forward_features(images, 2, "avg+cls"))
