"""transformers layouts, hf-hub ids and DINOv2 releases: features equal to the models' own forward.

Each transformers type is a tiny random model saved with ``save_pretrained``; the reference is that model's
forward in transformers (``hidden_states`` through its final ``layernorm``, mean over patch tokens).
DINOv2 releases are checked against an independent plain-torch forward of the official model.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from fixtures_checkpoints import (
    HF_CLASSES,
    write_data2vec_checkpoint,
    write_dinov2_release,
    write_hf_cache,
    write_hf_model,
    write_ijepa_checkpoint,
)

from ijepa_eval.cli import main
from ijepa_eval.encoders import load_encoder, read_encoder_checkpoint
from ijepa_eval.errors import CheckpointError

CLS_TYPES = {"vit", "vit_mae", "dinov2", "dinov2_with_registers"}


def base_of(model):
    """The base model inside a task class (``vit.``, ``dinov2.`` ...), or the model itself."""
    return getattr(model, "base_model", model)


def hf_reference(model, x: torch.Tensor, n: int, num_prefix: int) -> dict[str, torch.Tensor]:
    """{"avg", "cls"}: the last n hidden states through the model's final layernorm, oldest first."""
    base = base_of(model)
    kwargs = {"noise": torch.arange(x.shape[-1] // base.config.patch_size * x.shape[-2] // base.config.patch_size)
              .float().expand(len(x), -1)} if base.config.model_type == "vit_mae" else {}
    with torch.no_grad():
        out = base(pixel_values=x, output_hidden_states=True, **kwargs)
        normed = [base.layernorm(h) for h in out.hidden_states[-n:]]
    # the final norm is what last_hidden_state already carries: the reference uses it the same way
    torch.testing.assert_close(normed[-1], out.last_hidden_state)
    return {"avg": torch.cat([h[:, num_prefix:].mean(1) for h in normed], 1), "cls": torch.cat([h[:, 0] for h in normed], 1)}


@pytest.fixture
def images():
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("model_type", list(HF_CLASSES))
def test_base_models_match_transformers(tmp_path, images, model_type):
    extra = {"num_register_tokens": 2} if model_type == "dinov2_with_registers" else {}
    shards = {"max_shard_size": "20KB"} if model_type == "vit_mae" else {}  # sharded: model.safetensors.index.json
    model = write_hf_model(tmp_path / "m", model_type, seed=1, **shards, **extra)
    assert (tmp_path / "m" / "model.safetensors.index.json").is_file() == bool(shards)
    img_size = {"img_size": 32} if model_type.startswith("dinov2") else {}  # DINOv2 defaults to 224
    enc = load_encoder(tmp_path / "m", **img_size)
    prefix = (model_type in CLS_TYPES) + extra.get("num_register_tokens", 0)
    assert enc.info["format"] == "hf" and enc.num_prefix_tokens == prefix and enc.depth == 3
    assert enc.info["arch"]["num_heads"] == 2 and enc.info["meta"]["model_type"] == model_type
    for n in (1, 2):
        want = hf_reference(model, images, n, prefix)
        torch.testing.assert_close(enc.forward_features(images, n, "avg"), want["avg"], atol=1e-5, rtol=1e-5)
        if model_type in CLS_TYPES:
            torch.testing.assert_close(enc.forward_features(images, n, "cls"), want["cls"], atol=1e-5, rtol=1e-5)
    expected_branch = "context" if model_type == "ijepa" else None
    assert enc.info["branch"] == expected_branch and enc.info["branches"] == ([expected_branch] if expected_branch else [])


@pytest.mark.parametrize("model_type", list(HF_CLASSES))
def test_task_classes_drop_heads_and_decoders(tmp_path, images, model_type):
    task = HF_CLASSES[model_type][2][0]
    extra = {"num_register_tokens": 1} if model_type == "dinov2_with_registers" else {}
    model = write_hf_model(tmp_path / "m", model_type, task=task, seed=2, safetensors=model_type != "vit", **extra)
    assert (tmp_path / "m" / "pytorch_model.bin").is_file() == (model_type == "vit")  # read with weights_only
    enc = load_encoder(tmp_path / "m", img_size=32)
    prefix = (model_type in CLS_TYPES) + extra.get("num_register_tokens", 0)
    torch.testing.assert_close(enc.forward_features(images, 3, "avg"), hf_reference(model, images, 3, prefix)["avg"],
                               atol=1e-5, rtol=1e-5)
    dropped = enc.info["dropped_keys"]
    head = "decoder.decoder_pred.weight" if task == "ViTMAEForPreTraining" else "classifier.weight"
    assert head in dropped and not any(k.startswith(("blocks.", "norm.")) for k in dropped)


def test_dinov2_swiglu_and_default_224_resampling(tmp_path):
    """DINOv2 evaluates at 224: the 448-px grid is resampled as transformers does (antialias only with registers)."""
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    for model_type, extra in (("dinov2", {"use_swiglu_ffn": True}), ("dinov2_with_registers", {"num_register_tokens": 2})):
        model = write_hf_model(tmp_path / model_type, model_type, seed=4, image_size=448, patch_size=32, **extra)
        enc = load_encoder(tmp_path / model_type)
        assert enc.img_size == 224 and enc.info["arch"]["img_size"] == 224
        prefix = 1 + extra.get("num_register_tokens", 0)
        torch.testing.assert_close(enc.forward_features(x, 2, "avg+cls").reshape(2, 2, 2, -1)[:, :, 0].flatten(1),
                                   hf_reference(model, x, 2, prefix)["avg"], atol=1e-5, rtol=1e-5)
    assert read_encoder_checkpoint(tmp_path / "dinov2").arch.kwargs["mlp_layer"] == "swiglu_packed"


def test_hub_id_resolves_in_local_cache_offline(tmp_path, images, monkeypatch):
    model = write_hf_model(tmp_path / "saved", "vit_mae", seed=5)
    snapshot = write_hf_cache(tmp_path / "hub", "facebook/vit-mae-tiny", tmp_path / "saved")
    assert (snapshot / "model.safetensors").is_symlink()
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    enc = load_encoder("hf-hub:facebook/vit-mae-tiny")
    assert enc.info["source"] == "hf-hub:facebook/vit-mae-tiny" and enc.info["meta"]["folder"] == str(snapshot)
    assert enc.info["sha256"] == load_encoder(tmp_path / "saved").info["sha256"]
    torch.testing.assert_close(enc.forward_features(images, 2, "avg"), hf_reference(model, images, 2, 1)["avg"],
                               atol=1e-5, rtol=1e-5)
    with pytest.raises(CheckpointError, match=r"not in the local HF cache.*hf download facebook/ijepa_vith14_1k") as err:
        load_encoder("hf-hub:facebook/ijepa_vith14_1k")
    assert "\n" not in str(err.value)
    with pytest.raises(CheckpointError, match="not a hub id"):
        load_encoder("hf-hub:just-a-name")


def test_config_defaults_and_missing_heads(tmp_path):
    """Older save_pretrained configs may omit defaults: layer_norm_eps falls back to the config class's."""
    import json

    images = torch.randn(2, 3, 32, 32)
    for model_type, eps in (("vit", 1e-12), ("dinov2", 1e-6)):
        model = write_hf_model(tmp_path / model_type, model_type, layer_norm_eps=0.01)  # an eps that shows
        enc = load_encoder(tmp_path / model_type, img_size=32)
        torch.testing.assert_close(enc.forward_features(images, 2), hf_reference(model, images, 2, 1)["avg"],
                                   atol=1e-5, rtol=1e-5)
        config = json.loads((tmp_path / model_type / "config.json").read_text())
        del config["layer_norm_eps"]
        (tmp_path / model_type / "config.json").write_text(json.dumps(config))
        assert read_encoder_checkpoint(tmp_path / model_type).arch.kwargs["norm_eps"] == eps
    del config["num_attention_heads"]
    (tmp_path / "dinov2" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="config.json has no num_attention_heads"):
        load_encoder(tmp_path / "dinov2")


def test_bad_folders_fail_with_one_line(tmp_path):
    write_hf_model(tmp_path / "m", "vit")
    config = (tmp_path / "m" / "config.json").read_text()
    (tmp_path / "m" / "config.json").write_text(config.replace('"model_type": "vit"', '"model_type": "swin"'))
    with pytest.raises(CheckpointError, match="transformers folder of model_type 'swin', which matches no known"):
        load_encoder(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="has config.json but none of model.safetensors"):
        load_encoder(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors.index.json").write_text('{"metadata": {}}')
    with pytest.raises(CheckpointError, match="cannot read the shard index .*KeyError"):
        load_encoder(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text("[1, 2]")  # JSON, but not the object save_pretrained writes
    with pytest.raises(CheckpointError, match="config.json' holds a JSON list, not an object"):
        load_encoder(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="cannot read .*config.json"):
        load_encoder(tmp_path / "m")
    (tmp_path / "m" / "config.json").unlink()
    with pytest.raises(CheckpointError, match="is a folder without config.json"):
        load_encoder(tmp_path / "m")


def dinov2_reference(sd: dict, x: torch.Tensor, heads: int, n: int) -> dict[str, torch.Tensor]:
    """Plain-torch forward of facebookresearch/dinov2 DinoVisionTransformer at its own grid (no timm)."""
    w = sd["patch_embed.proj.weight"]
    dim, patch = w.shape[0], w.shape[-1]
    h = F.conv2d(x, w, sd["patch_embed.proj.bias"], stride=patch).flatten(2).transpose(1, 2)
    h = torch.cat([sd["cls_token"].expand(len(x), -1, -1), h], 1) + sd["pos_embed"]
    regs = sd.get("register_tokens")
    if regs is not None:  # inserted after cls, no position
        h = torch.cat([h[:, :1], regs.expand(len(x), -1, -1), h[:, 1:]], 1)

    def ln(t, name):
        return F.layer_norm(t, (dim,), sd[f"{name}.weight"], sd[f"{name}.bias"], eps=1e-6)

    outs = []
    for i in range(1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))):
        b = f"blocks.{i}"
        qkv = F.linear(ln(h, f"{b}.norm1"), sd[f"{b}.attn.qkv.weight"], sd[f"{b}.attn.qkv.bias"])
        q, k, v = qkv.reshape(len(x), h.shape[1], 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
        attn = ((q @ k.transpose(-2, -1)) / math.sqrt(dim // heads)).softmax(-1)
        o = F.linear((attn @ v).transpose(1, 2).reshape(len(x), h.shape[1], dim), sd[f"{b}.attn.proj.weight"],
                     sd[f"{b}.attn.proj.bias"])
        h = h + sd[f"{b}.ls1.gamma"] * o
        y = ln(h, f"{b}.norm2")
        if f"{b}.mlp.w12.weight" in sd:
            x1, x2 = F.linear(y, sd[f"{b}.mlp.w12.weight"], sd[f"{b}.mlp.w12.bias"]).chunk(2, -1)
            y = F.linear(F.silu(x1) * x2, sd[f"{b}.mlp.w3.weight"], sd[f"{b}.mlp.w3.bias"])
        else:
            y = F.linear(F.gelu(F.linear(y, sd[f"{b}.mlp.fc1.weight"], sd[f"{b}.mlp.fc1.bias"])),
                         sd[f"{b}.mlp.fc2.weight"], sd[f"{b}.mlp.fc2.bias"])
        h = h + sd[f"{b}.ls2.gamma"] * y
        outs.append(ln(h, "norm"))
    prefix = 1 + (0 if regs is None else regs.shape[1])
    return {"avg": torch.cat([o[:, prefix:].mean(1) for o in outs[-n:]], 1),
            "cls": torch.cat([o[:, 0] for o in outs[-n:]], 1)}


@pytest.mark.parametrize("registers,swiglu", [(0, False), (4, False), (4, True)])
def test_dinov2_release_matches_plain_torch(tmp_path, images, registers, swiglu):
    sd = write_dinov2_release(tmp_path / "dinov2.pth", registers=registers, swiglu=swiglu, seed=registers + swiglu)
    # width 64 is not in the heads table: heads come from --arch; img_size 32 = the file's own 4x4 grid
    enc = load_encoder(tmp_path / "dinov2.pth", arch={"num_heads": 4}, img_size=32)
    assert enc.info["format"] == "dinov2" and enc.num_prefix_tokens == 1 + registers
    assert enc.info["dropped_keys"] == ["mask_token"] and enc.info["branch"] is None
    want = dinov2_reference(sd, images, heads=4, n=2)
    for pool in ("avg", "cls"):
        torch.testing.assert_close(enc.forward_features(images, 2, pool), want[pool], atol=1e-5, rtol=1e-5)
    assert load_encoder(tmp_path / "dinov2.pth", arch={"num_heads": 4}).img_size == 224  # DINOv2's eval size


def test_inspect_tells_the_context_branch(tmp_path, capsys):
    write_hf_model(tmp_path / "ijepa", "ijepa", task="IJepaForImageClassification")
    assert main(["inspect", str(tmp_path / "ijepa")]) == 0
    out = capsys.readouterr().out
    assert "format:   hf (transformers save_pretrained folder" in out and "branches: context*" in out
    assert "note:     context (online) encoder, not the EMA target encoder" in out
    assert "classifier.weight (1 keys)" in out and "num_heads=2" in out and "norm_eps=1e-06" in out
    assert main(["inspect", str(tmp_path / "ijepa"), "--branch", "target"]) != 0
    assert "holds only the context encoder" in capsys.readouterr().err
    write_dinov2_release(tmp_path / "d.pth", registers=4, swiglu=True, dim=384, depth=2)
    assert main(["inspect", str(tmp_path / "d.pth"), "--json"]) == 0
    report = __import__("json").loads(capsys.readouterr().out)
    assert report["format"] == "dinov2" and report["arch"]["reg_tokens"] == 4 and report["arch"]["num_heads"] == 6
    assert report["arch"]["mlp_layer"] == "swiglu_packed" and report["arch"]["no_embed_class"] is True


def test_timm_ijepa_weights_are_the_context_encoder(monkeypatch):
    """timm's checkpoint_filter_fn reads the official file's 'encoder': its *_ijepa weights are branch context."""
    import timm

    real_create = timm.create_model

    def offline_create(name, pretrained=False, **kwargs):  # no download here: a tiny random ViT with timm's tag
        vit = real_create("vit_tiny_patch16_224", pretrained=False, **kwargs)
        vit.pretrained_cfg = {**vit.pretrained_cfg, "tag": name.partition(".")[2] or None}
        return vit

    monkeypatch.setattr(timm, "create_model", offline_create)
    name = "vit_huge_patch14_gap_224.in1k_ijepa"
    enc = load_encoder(name, img_size=32)
    assert enc.info["branch"] == "context" and enc.info["branches"] == ["context"]
    assert enc.info["meta"]["pretrained_tag"] == "in1k_ijepa"
    assert load_encoder(name, branch="context", img_size=32).info["branch"] == "context"
    with pytest.raises(CheckpointError, match=r"holds one network \(context\)"):
        load_encoder(name, branch="target", img_size=32)
    assert load_encoder("vit_base_patch16_224.mae", img_size=32).info["branch"] is None


@pytest.mark.slow  # ~15 s on 2 shared cores: four models through the real runner
def test_compare_ijepa_mae_hub_dinov2_data2vec_and_hf_ijepa_side_by_side(tmp_path, monkeypatch, capsys):
    """`ijepa-eval compare` over an official I-JEPA file, an MAE hub id, a DINOv2 release, a data2vec vision
    checkpoint and an HF I-JEPA folder (issue 12's "done when")."""
    import json

    import pandas as pd
    import yaml

    from ijepa_eval.data.synthetic import write_cifar100
    from ijepa_eval.protocols import RECIPES_DIR

    root = write_cifar100(tmp_path / "cifar", n_train=40, n_test=20)
    recipe = yaml.safe_load((RECIPES_DIR / "cifar100.yaml").read_text())
    recipe.update(epochs=1, batch_size=32, grid={"heads": ["linear"], "lr_mults": [1.0], "wds": [0.0]})
    (tmp_path / "cifar100.yaml").write_text(yaml.safe_dump(recipe))
    four = {"num_hidden_layers": 4}  # the runner extracts concatPOOL4
    write_ijepa_checkpoint(tmp_path / "IN1K-vit.t.16.pth.tar", depth=4)
    write_hf_model(tmp_path / "mae", "vit_mae", task="ViTMAEForPreTraining", **four)
    write_hf_cache(tmp_path / "hub", "facebook/vit-mae-tiny", tmp_path / "mae")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    write_dinov2_release(tmp_path / "dinov2_reg4.pth", registers=4, dim=192, depth=4, patch=16, grid=3)
    write_data2vec_checkpoint(tmp_path / "data2vec_vision.pt", depth=4)
    write_hf_model(tmp_path / "ijepa_hf", "ijepa", **four)
    ckpts = [str(tmp_path / "IN1K-vit.t.16.pth.tar"), "hf-hub:facebook/vit-mae-tiny", str(tmp_path / "dinov2_reg4.pth"),
             str(tmp_path / "data2vec_vision.pt"), str(tmp_path / "ijepa_hf")]
    out = tmp_path / "cmp"
    assert main(["compare", *ckpts, "--protocols", str(tmp_path / "cifar100.yaml"), "--root", str(root), "--out", str(out),
                 "--cache-dir", str(tmp_path / "cache"), "--device", "cpu"]) == 0
    flat = pd.read_csv(out / "compare.csv", dtype=str)
    assert flat["model"].tolist() == ["IN1K-vit.t.16.pth.tar", "vit-mae-tiny", "dinov2_reg4.pth", "data2vec_vision.pt",
                                      "ijepa_hf†"]
    assert flat["cifar100"].astype(float).between(0, 100).all()
    assert "† context (online) encoder" in (out / "compare.md").read_text()
    models = {Path(r["model"]["source"]).name: (r["model"]["format"], r["model"]["branch"], r["features"]["img_size"])
              for r in (json.loads(p.read_text()) for p in out.glob("*.json"))}
    assert models == {"IN1K-vit.t.16.pth.tar": ("ijepa", "target", 48), "vit-mae-tiny": ("hf", None, 32),
                      "dinov2_reg4.pth": ("dinov2", None, 224), "data2vec_vision.pt": ("data2vec", "student", 48),
                      "ijepa_hf": ("hf", "context", 32)}
    assert "ijepa_hf†" in capsys.readouterr().out
    # paper tables: the context row is marked and explained (results on synthetic data land in "ours only")
    assert main(["table", str(out), "--out", str(tmp_path / "tables"), "--format", "md"]) == 0
    table3 = (tmp_path / "tables" / "table3.md").read_text()
    assert "ijepa_hf (context)†" in table3 and "IN1K-vit.t.16.pth.tar (target) " in table3
    assert "† context (online) encoder, not the EMA target encoder" in table3


def official_pos_embed(pos: torch.Tensor, new: int, registers: bool, exact: bool = False) -> torch.Tensor:
    """DinoVisionTransformer.interpolate_pos_encoding as dinov2/hub/backbones.py builds each model: register
    models antialias to the exact grid; the originals scale by (new + 0.1) / old without antialias."""
    old, dim = math.isqrt(pos.shape[1] - 1), pos.shape[-1]
    grid = pos[:, 1:].reshape(1, old, old, dim).permute(0, 3, 1, 2)
    if registers or exact:
        grid = F.interpolate(grid, size=(new, new), mode="bicubic", antialias=registers)
    else:
        grid = F.interpolate(grid, scale_factor=((new + 0.1) / old,) * 2, mode="bicubic", antialias=False)
    return torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, new * new, dim)], 1)


@pytest.mark.parametrize("registers", [0, 4])
def test_dinov2_release_other_resolution_interpolates_like_dinov2(tmp_path, images, registers):
    """Trained at 64 px (8x8 grid), evaluated at 32 (4x4): positions resampled exactly as DINOv2's own code."""
    sd = write_dinov2_release(tmp_path / "d.pth", registers=registers, grid=8, seed=7)
    enc = load_encoder(tmp_path / "d.pth", arch={"num_heads": 4}, img_size=32)
    got = enc.forward_features(images, 2, "avg")
    want = dinov2_reference({**sd, "pos_embed": official_pos_embed(sd["pos_embed"], 4, bool(registers))}, images, 4, 2)
    torch.testing.assert_close(got, want["avg"], atol=1e-5, rtol=1e-5)
    # the detail matters: without the offset (originals) or without antialiasing (registers) features differ
    other = official_pos_embed(sd["pos_embed"], 4, False, exact=True)
    assert not torch.allclose(got, dinov2_reference({**sd, "pos_embed": other}, images, 4, 2)["avg"], atol=1e-4)


def test_timm_hub_layout_from_the_cache(tmp_path, images, monkeypatch):
    """timm's own save_for_hf folder (config.json: architecture, pretrained_cfg) read from the HF cache."""
    import json

    import timm
    from timm.models import save_for_hf

    for tag, repo in (("in1k_ijepa", "timm/vit_tiny_ijepa"), ("augreg_in21k", "timm/vit_tiny_augreg")):
        vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, num_classes=0).eval()
        vit.pretrained_cfg = {**vit.pretrained_cfg, "tag": tag}  # the tag timm's hub weights carry
        save_for_hf(vit, str(tmp_path / tag), safe_serialization=True)
        assert json.loads((tmp_path / tag / "config.json").read_text())["pretrained_cfg"]["tag"] == tag
        write_hf_cache(tmp_path / "hub", repo, tmp_path / tag)
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
        enc = load_encoder(f"hf-hub:{repo}")
        assert enc.info["format"] == "timm-hub" and enc.info["meta"]["architecture"] == "vit_tiny_patch16_224"
        assert enc.info["branch"] == ("context" if tag == "in1k_ijepa" else None)
        with torch.no_grad():
            want = vit.forward_features(images)[:, 1:].mean(1)  # timm's own forward: normed tokens, patches only
        torch.testing.assert_close(enc.forward_features(images), want, atol=1e-5, rtol=1e-5)
    with pytest.raises(CheckpointError, match=r"holds one network \(context\)"):
        load_encoder("hf-hub:timm/vit_tiny_ijepa", branch="target")
