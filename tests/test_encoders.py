"""Encoders: every format loads the right network, features match an independent computation, bad input fails."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from fixtures_checkpoints import (
    TINY,
    ijepa_encoder_state_dict,
    tiny_vit_state_dict,
    write_dino_checkpoint,
    write_ijepa_checkpoint,
    write_mae_checkpoint,
    write_malicious_checkpoint,
    write_safetensors,
    write_state_dict,
)

from ijepa_eval.encoders import (
    Encoder,
    build_vit,
    detect_format,
    encoder_from_vit,
    infer_arch,
    load_encoder,
    read_encoder_checkpoint,
)
from ijepa_eval.encoders import registry as formats
from ijepa_eval.errors import ArchitectureError, CheckpointError, ConfigError, UnsafeCheckpointError
from ijepa_eval.io import sha256_file

HEADS = TINY["num_heads"]


def reference_blocks(sd: dict, x: torch.Tensor, num_heads: int = HEADS) -> list[torch.Tensor]:
    """Each block's output after the final norm, by plain torch ops on the state dict (no timm)."""
    w = sd["patch_embed.proj.weight"]
    dim, patch = w.shape[0], w.shape[-1]
    h = F.conv2d(x, w, sd["patch_embed.proj.bias"], stride=patch).flatten(2).transpose(1, 2)
    prefix = [t.expand(len(x), -1, -1) for k in ("cls_token", "reg_token") if (t := sd.get(k)) is not None]
    h = torch.cat(prefix + [h], dim=1) + sd["pos_embed"]
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))

    def ln(t, name):
        return F.layer_norm(t, (dim,), sd[f"{name}.weight"], sd[f"{name}.bias"], eps=1e-6)

    outs = []
    for i in range(depth):
        b = f"blocks.{i}"
        qkv = F.linear(ln(h, f"{b}.norm1"), sd[f"{b}.attn.qkv.weight"], sd[f"{b}.attn.qkv.bias"])
        q, k, v = qkv.reshape(len(x), h.shape[1], 3, num_heads, dim // num_heads).permute(2, 0, 3, 1, 4)
        attn = ((q @ k.transpose(-2, -1)) / math.sqrt(dim // num_heads)).softmax(dim=-1)
        o = (attn @ v).transpose(1, 2).reshape(len(x), h.shape[1], dim)
        h = h + F.linear(o, sd[f"{b}.attn.proj.weight"], sd[f"{b}.attn.proj.bias"])
        y = F.gelu(F.linear(ln(h, f"{b}.norm2"), sd[f"{b}.mlp.fc1.weight"], sd[f"{b}.mlp.fc1.bias"]))
        h = h + F.linear(y, sd[f"{b}.mlp.fc2.weight"], sd[f"{b}.mlp.fc2.bias"])
        outs.append(ln(h, "norm"))
    return outs


def reference_features(sd, x, n, pool, num_prefix):
    outs = reference_blocks(sd, x)[-n:]
    parts = []
    for o in outs:
        if "avg" in pool:
            parts.append(o[:, num_prefix:].mean(1))
        if "cls" in pool:
            parts.append(o[:, 0])
    return torch.cat(parts, dim=1)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpts")
    paths = {name: d / f"{name}.pth" for name in ("ijepa", "ijepa_single", "mae", "mae_release", "dino", "ibot")}
    refs = {
        "ijepa": write_ijepa_checkpoint(paths["ijepa"]),
        "ijepa_single": write_ijepa_checkpoint(paths["ijepa_single"], ddp=False),
        "mae": write_mae_checkpoint(paths["mae"]),
        "mae_release": write_mae_checkpoint(paths["mae_release"], encoder_only=True),
        "dino": write_dino_checkpoint(paths["dino"], "dino"),
        "ibot": write_dino_checkpoint(paths["ibot"], "ibot"),
    }
    return paths, refs


@pytest.fixture
def images():
    return torch.randn(2, 3, TINY["img_size"], TINY["img_size"])


@pytest.mark.parametrize("branch", [None, "target", "context"])
def test_ijepa_branches_match_independent_features(ckpts, images, branch):
    paths, refs = ckpts
    enc = load_encoder(paths["ijepa"], branch=branch)
    chosen = branch or "target"
    assert enc.info["branch"] == chosen and enc.info["format"] == "ijepa"
    assert enc.info["branches"] == ["target", "context"]
    assert (enc.embed_dim, enc.depth, enc.patch_size, enc.num_prefix_tokens) == (192, 3, 16, 0)
    assert not enc.has_class_token and enc.img_size == 48
    got = enc.forward_features(images, n_last_blocks=2, pool="avg")
    want = reference_features(refs["ijepa"][chosen], images, 2, "avg", 0)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_target_differs_from_context_and_meta(ckpts, images):
    paths, _ = ckpts
    target, context = load_encoder(paths["ijepa"]), load_encoder(paths["ijepa"], "context")
    assert not torch.allclose(target.forward_features(images), context.forward_features(images))
    meta = target.info["meta"]
    assert (meta["epoch"], meta["loss"], meta["batch_size"], meta["world_size"], meta["lr"]) == (3, 0.4375, 128, 8, 0.001)
    assert meta["scaler"]["scale"] == 65536.0
    assert target.info["sha256"] == sha256_file(paths["ijepa"])
    dropped = target.info["dropped_keys"]
    assert "predictor.mask_token" in dropped and "predictor.predictor_blocks.0.attn.qkv.weight" in dropped
    assert all(k.startswith("predictor.") for k in dropped)
    assert all(not p.requires_grad for p in target.parameters()) and not target.training


def test_ijepa_without_ddp_prefix_and_bare_encoder(ckpts, images, tmp_path):
    paths, refs = ckpts
    enc = load_encoder(paths["ijepa_single"])
    want = reference_features(refs["ijepa_single"]["target"], images, 1, "avg", 0)
    torch.testing.assert_close(enc.forward_features(images), want, atol=1e-5, rtol=1e-5)
    bare = tmp_path / "bare.pth"
    write_state_dict(bare, refs["ijepa"]["target"], prefix="module.")
    enc = load_encoder(bare)
    assert enc.info["format"] == "state_dict" and enc.info["branch"] is None
    want = reference_features(refs["ijepa"]["target"], images, 3, "avg", 0)
    torch.testing.assert_close(enc.forward_features(images, 3), want, atol=1e-5, rtol=1e-5)


def test_pools_shapes_and_concat_order(ckpts, images):
    paths, refs = ckpts
    enc = load_encoder(paths["dino"])
    sd = refs["dino"]["teacher"]
    d = enc.embed_dim
    for pool, width in (("avg", 1), ("cls", 1), ("avg+cls", 2)):
        feats = enc.forward_features(images, n_last_blocks=3, pool=pool)
        assert feats.shape == (2, 3 * width * d) and feats.dtype == torch.float32
        torch.testing.assert_close(feats, reference_features(sd, images, 3, pool, 1), atol=1e-5, rtol=1e-5)
        last = enc.forward_features(images, n_last_blocks=1, pool=pool)
        torch.testing.assert_close(feats[:, -width * d:], last)
    pooled = enc.forward_pooled(images, n_last_blocks=2)
    assert pooled["avg"].shape == pooled["cls"].shape == (2, 2, d)
    torch.testing.assert_close(pooled["avg"].flatten(1), enc.forward_features(images, 2, "avg"))
    with pytest.raises(ConfigError, match="unknown pool 'max'"):
        enc.forward_features(images, pool="max")
    with pytest.raises(ConfigError, match="n_last_blocks"):
        enc.forward_features(images, n_last_blocks=4)


def test_avg_excludes_register_tokens(images):
    from timm.models.vision_transformer import VisionTransformer

    sd = tiny_vit_state_dict(5, class_token=True, reg_tokens=2)
    vit = VisionTransformer(**TINY, class_token=True, reg_tokens=2, num_classes=0, global_pool="")
    vit.load_state_dict(sd)
    enc = encoder_from_vit(vit)
    assert enc.num_prefix_tokens == 3 and enc.info["sha256"] and enc.info["format"] == "in-memory"
    torch.testing.assert_close(enc.forward_features(images, 2, "avg+cls"),
                               reference_features(sd, images, 2, "avg+cls", 3), atol=1e-5, rtol=1e-5)
    assert "cls" not in encoder_from_vit(build_vit(infer_arch(ijepa_encoder_state_dict()).kwargs)).forward_pooled(
        images, 1)


def test_mae_training_and_release(ckpts, images):
    paths, refs = ckpts
    for name, fmt in (("mae", "mae"), ("mae_release", "wrapped")):
        enc = load_encoder(paths[name])
        assert enc.info["format"] == fmt and enc.has_class_token and enc.num_prefix_tokens == 1
        torch.testing.assert_close(enc.forward_features(images, 2, "cls"),
                                   reference_features(refs[name], images, 2, "cls", 1), atol=1e-5, rtol=1e-5)
    enc = load_encoder(paths["mae"])
    assert {"mask_token", "decoder_pred.weight", "decoder_blocks.0.attn.qkv.weight"} <= set(enc.info["dropped_keys"])
    assert enc.info["meta"]["args"]["mask_ratio"] == 0.75 and enc.info["meta"]["epoch"] == 399


@pytest.mark.parametrize("kind", ["dino", "ibot"])
def test_dino_ibot_teacher_default_student_on_request(ckpts, images, kind):
    paths, refs = ckpts
    teacher, student = load_encoder(paths[kind]), load_encoder(paths[kind], branch="student")
    assert teacher.info["format"] == kind and teacher.info["branch"] == "teacher"
    for enc, name in ((teacher, "teacher"), (student, "student")):
        torch.testing.assert_close(enc.forward_features(images, 1, "cls"),
                                   reference_features(refs[kind][name], images, 1, "cls", 1), atol=1e-5, rtol=1e-5)
    assert "head.last_layer.weight_v" in teacher.info["dropped_keys"]
    if kind == "ibot":
        assert "masked_embed" in student.info["dropped_keys"]
    assert teacher.info["meta"]["args"]["arch"] == "vit_tiny"
    with pytest.raises(CheckpointError, match="unknown branch 'target'"):
        load_encoder(paths[kind], branch="target")


def test_wrappers_prefixes_and_safetensors(tmp_path, images):
    sd = tiny_vit_state_dict(3)
    cases = {"sd.pth": dict(wrapper="state_dict"), "model.pth": dict(wrapper="model", prefix="module."),
             "backbone.pth": dict(prefix="backbone."), "plain.pt": {}}
    want = reference_features(sd, images, 2, "avg+cls", 1)
    for name, kw in cases.items():
        write_state_dict(tmp_path / name, sd, **kw)
    write_safetensors(tmp_path / "w.safetensors", sd)
    for name in [*cases, "w.safetensors"]:
        enc = load_encoder(tmp_path / name)
        torch.testing.assert_close(enc.forward_features(images, 2, "avg+cls"), want, atol=1e-5, rtol=1e-5)
    assert load_encoder(tmp_path / "w.safetensors").info["meta"] == {"format": "pt"}


def test_other_resolution_interpolates_patch_positions_only(ckpts):
    paths, refs = ckpts

    def interp(grid: torch.Tensor, side: int, new: int) -> torch.Tensor:
        g = grid.reshape(1, side, side, -1).permute(0, 3, 1, 2)
        g = F.interpolate(g, size=(new, new), mode="bicubic", antialias=True, align_corners=False)
        return g.permute(0, 2, 3, 1).reshape(1, new * new, -1)

    enc = load_encoder(paths["ijepa"], img_size=64)  # grid 3x3 -> 4x4, no cls slot
    assert enc.img_size == 64 and enc.info["arch"]["img_size"] == 64
    torch.testing.assert_close(enc.vit.pos_embed.data, interp(refs["ijepa"]["target"]["pos_embed"], 3, 4))
    assert enc.forward_features(torch.randn(1, 3, 64, 64)).shape == (1, 192)
    mae = load_encoder(paths["mae"], img_size=64)  # cls slot kept as is
    pos = refs["mae"]["pos_embed"]
    torch.testing.assert_close(mae.vit.pos_embed.data[:, :1], pos[:, :1])
    torch.testing.assert_close(mae.vit.pos_embed.data[:, 1:], interp(pos[:, 1:], 3, 4))


def test_bf16_autocast_close_to_fp32(ckpts, images):
    enc = load_encoder(ckpts[0]["ijepa"])
    ref = enc.forward_features(images, 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = enc.forward_features(images, 2)
    assert got.dtype == torch.float32
    assert (got - ref).abs().max() < 0.1


def test_architecture_inference_and_arch_override(tmp_path, images):
    sd = tiny_vit_state_dict(0, embed_dim=96, num_heads=4, depth=2)  # width not in the table
    path = tmp_path / "w96.pth"
    write_state_dict(path, sd)
    spec = read_encoder_checkpoint(path).arch
    assert spec.unknown == ["num_heads"]
    assert spec.kwargs | {"num_heads": None} == spec.kwargs | dict(
        embed_dim=96, depth=2, patch_size=16, img_size=48, class_token=True, mlp_ratio=4.0, qkv_bias=True)
    with pytest.raises(ArchitectureError, match="num_heads.*--arch"):
        load_encoder(path)
    enc = load_encoder(path, arch={"num_heads": 4})
    assert enc.info["arch"]["num_heads"] == 4
    want = reference_blocks(sd, images, num_heads=4)[-1][:, 0]
    torch.testing.assert_close(enc.forward_features(images, 1, "cls"), want, atol=1e-5, rtol=1e-5)
    with pytest.raises(ArchitectureError, match="unknown ViT kwargs in arch: heads"):
        load_encoder(path, arch={"heads": 4})


def test_timm_arch_name_and_timm_source(tmp_path, images):
    sd = tiny_vit_state_dict(0, embed_dim=384, num_heads=6, depth=12, img_size=32)
    path = tmp_path / "s16.pth"
    write_state_dict(path, sd)
    enc = load_encoder(path, arch="vit_small_patch16_224")
    assert enc.info["arch"]["timm_model"] == "vit_small_patch16_224" and enc.img_size == 32
    enc = load_encoder("random:vit_small_patch16_224", img_size=32)
    assert enc.info["format"] == "timm" and enc.depth == 12 and len(enc.info["sha256"]) == 64
    with pytest.raises(ArchitectureError, match="defines its own"):
        load_encoder("random:vit_small_patch16_224", arch={"num_heads": 3})
    with pytest.raises(CheckpointError, match="neither an existing checkpoint file nor a timm model"):
        load_encoder(tmp_path / "missing.pth")
    with pytest.raises(ArchitectureError, match="unknown timm model 'vit_smal_patch16_224'. Did you mean"):
        load_encoder(path, arch="vit_smal_patch16_224")


def test_missing_misshaped_and_nonfinite_weights(tmp_path):
    sd = tiny_vit_state_dict(0)
    broken = dict(sd)
    del broken["blocks.1.norm2.bias"]
    broken["blocks.2.attn.proj.weight"] = torch.zeros(192, 100)
    write_state_dict(tmp_path / "broken.pth", broken)
    with pytest.raises(ArchitectureError) as err:
        load_encoder(tmp_path / "broken.pth")
    msg = str(err.value)
    assert "1 missing (blocks.1.norm2.bias)" in msg and "mis-shaped (blocks.2.attn.proj.weight (192, 100)" in msg
    assert "\n" not in msg
    nan = dict(sd)
    nan["blocks.0.mlp.fc1.weight"] = sd["blocks.0.mlp.fc1.weight"].clone()
    nan["blocks.0.mlp.fc1.weight"][0, 0] = float("nan")
    write_state_dict(tmp_path / "nan.pth", nan)
    with pytest.raises(CheckpointError, match="'blocks.0.mlp.fc1.weight' holds NaN/Inf"):
        load_encoder(tmp_path / "nan.pth")


def test_bad_files_fail_with_one_line(tmp_path, ckpts):
    text = tmp_path / "notes.pth"
    text.write_text("this is not a checkpoint\n")
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(ckpts[0]["mae"].read_bytes()[:5000])
    unknown = tmp_path / "unknown.pth"
    torch.save({"weights": [1, 2, 3], "step": 4}, unknown)
    int_keys, wrapped_int_keys = tmp_path / "int_keys.pth", tmp_path / "wrapped_int_keys.pth"
    torch.save({1: torch.zeros(2)}, int_keys)  # weights_only loads int keys; no detector may trip over them
    torch.save({"model": {1: torch.zeros(2)}}, wrapped_int_keys)
    cases = [(text, "not a PyTorch checkpoint"), (truncated, "truncated"), (unknown, "matches no known checkpoint format"),
             (tmp_path / "empty.pth", "does not exist"), (int_keys, "not a checkpoint of named weights"),
             (wrapped_int_keys, "not a checkpoint of named weights")]
    (tmp_path / "empty.safetensors").write_bytes(b"")
    cases.append((tmp_path / "empty.safetensors", "is empty"))
    for path, fragment in cases:
        with pytest.raises(CheckpointError, match=fragment) as err:
            load_encoder(path) if path.exists() else read_encoder_checkpoint(path)
        assert "\n" not in str(err.value)


def test_storage_record_check_reads_every_dtype_view_and_shared_storage(tmp_path):
    """The record check (for torch.load's mmap path) passes whatever torch.save writes: views of a larger
    storage, storages shared by two tensors, bf16/int8/bool/complex, optimizer-style nesting, empty tensors;
    and refuses the one record cut by a single element, naming it."""
    import zipfile

    from ijepa_eval.encoders.read import check_storage_records, read_file

    base = torch.arange(64, dtype=torch.float32)
    obj = {"view": base[10:20], "same": base, "bf16": torch.ones(5, dtype=torch.bfloat16),
           "i8": torch.ones(3, dtype=torch.int8), "bool": torch.ones(2, dtype=torch.bool),
           "c64": torch.ones(2, dtype=torch.complex64), "empty": torch.zeros(0),
           "opt": {"state": {0: {"exp_avg": torch.ones(4)}}, "param_groups": [{"params": [0], "lr": 0.1}]}}
    good = tmp_path / "good.pth"
    torch.save(obj, good)
    check_storage_records(good)
    loaded, _ = read_file(good)
    assert torch.equal(loaded["view"], base[10:20]) and loaded["view"].untyped_storage().nbytes() == 256
    src = zipfile.ZipFile(good)
    victim = next(i.filename for i in src.infolist() if "/data/" in i.filename and i.file_size == 10)  # bf16 x 5
    cut = tmp_path / "cut.pth"
    with zipfile.ZipFile(cut, "w") as out:
        for info in src.infolist():
            data = src.read(info)
            out.writestr(info, data[:-2] if info.filename == victim else data)
    key = victim.rsplit("/", 1)[-1]
    with pytest.raises(CheckpointError, match=f"storage record data/{key} holds 8 bytes but its tensor needs 10"):
        read_file(cut)


def test_malicious_pickle_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    write_malicious_checkpoint(path, marker)
    with pytest.raises(UnsafeCheckpointError, match="--trust-checkpoint"):
        load_encoder(path)
    assert not marker.exists()
    load_encoder(path, trust_checkpoint=True)  # full unpickle: the payload runs (and only then)
    assert marker.exists()


def test_exactly_one_detector_must_match(monkeypatch):
    obj = {"encoder": {}, "target_encoder": {}}
    assert detect_format(obj, "x").name == "ijepa"
    monkeypatch.setitem(formats.FORMATS, "copy", formats.FORMATS["ijepa"].__class__(
        "copy", "duplicate", formats.FORMATS["ijepa"].detect, formats.FORMATS["ijepa"].convert))
    with pytest.raises(CheckpointError, match="matches several checkpoint formats"):
        detect_format(obj, "x")


def test_encoder_is_module_with_contract_attributes(ckpts):
    enc = load_encoder(ckpts[0]["mae"])
    assert isinstance(enc, Encoder) and isinstance(enc, torch.nn.Module)
    assert set(enc.info) >= {"source", "sha256", "format", "branch", "branches", "arch", "dropped_keys", "meta"}
    assert enc.info["arch"]["num_heads"] == 3
