"""The decode backend through recipes, the feature cache and result JSONs (issue 23)."""

import pytest

from ijepa_eval.errors import ConfigError
from ijepa_eval.protocols.recipes import load_recipe


def test_decode_is_a_recipe_field_checked_against_what_the_protocol_can_do():
    assert load_recipe("cifar100").decode == "pil"  # the reference path stays the default
    assert load_recipe("cifar100", ["decode=tensor"]).to_dict()["decode"] == "tensor"
    with pytest.raises(ConfigError, match="Did you mean 'tensor'"):
        load_recipe("cifar100", ["decode=tensr"])
    with pytest.raises(ConfigError, match="aug=paper crops and flips every image on the host"):
        load_recipe("cifar100", ["decode=gpu", "aug=paper"])
    assert load_recipe("cifar100", ["decode=tensor", "aug=paper"]).decode == "tensor"
    with pytest.raises(ConfigError, match="RandAugment, which works on PIL"):
        load_recipe("in1k_1pct_finetune", ["decode=tensor"])


# ---------------------------------------------------------------------------------------------------------
# get_features: the backend is in the cache key, the default equals the float pipeline


def tiny_encoder(img_size: int = 32):
    import torch
    from timm.models.vision_transformer import VisionTransformer

    from ijepa_eval.encoders import encoder_from_vit

    torch.manual_seed(0)
    vit = VisionTransformer(img_size=img_size, patch_size=16, embed_dim=48, depth=2, num_heads=3, num_classes=0,
                            class_token=False, global_pool="avg", fc_norm=False)
    return encoder_from_vit(vit)


FAST = dict(batch_size=8, num_workers=0, shard_rows=16, progress=False, device="cpu", n_last_blocks=2)


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory):
    from ijepa_eval.data.synthetic import write_imagenet_like

    return write_imagenet_like(tmp_path_factory.mktemp("jpegs"), n_classes=2, n_train_per_class=6, n_val_per_class=0)


def test_the_default_backend_stores_what_the_float_pipeline_computes(jpegs, tmp_path):
    """uint8 loader + device normalisation (pil) = the per-image float transform, to the stored float16."""
    import torch

    from ijepa_eval.data import eval_transform, get_dataset
    from ijepa_eval.features import get_features

    enc, ds = tiny_encoder(), get_dataset("imagenet", jpegs, "train")
    fs = get_features(enc, ds, cache_dir=tmp_path, **FAST)
    x = torch.stack([eval_transform("imagenet", 32)(ds[i][0]) for i in range(len(ds))])
    with torch.inference_mode():
        direct = enc.forward_features(x, n_last_blocks=2, pool="avg")
    assert torch.equal(fs.representation("concatPOOL2"), direct.to(torch.float16).float())
    assert fs.meta["key_fields"]["decode"] == "pil"


def test_the_cache_never_serves_one_backends_features_for_another(jpegs, tmp_path):
    import torch

    from ijepa_eval.data import get_dataset
    from ijepa_eval.features import cache_entry_for, get_features

    enc, ds = tiny_encoder(), get_dataset("imagenet", jpegs, "train")
    keys = {b: cache_entry_for(enc, ds, cache_dir=tmp_path, decode=b, n_last_blocks=2)[0].key
            for b in ("pil", "tensor", "gpu")}
    assert len(set(keys.values())) == 3
    runs = {b: get_features(enc, ds, cache_dir=tmp_path, decode=b, **FAST) for b in ("pil", "tensor", "gpu")}
    for backend, fs in runs.items():
        assert not fs.meta["cache_hit"] and fs.meta["cache_key"] == keys[backend]
        again = get_features(enc, ds, cache_dir=tmp_path, decode=backend, **FAST)
        assert again.meta["cache_hit"] and again.meta["key_fields"]["decode"] == backend
    pil, tensor, gpu = (runs[b].representation("lastPOOL") for b in ("pil", "tensor", "gpu"))
    assert not torch.equal(pil, tensor)  # the resize differs by a few pixels: features must not be shared
    assert torch.nn.functional.cosine_similarity(pil, tensor).min() > 0.999
    assert torch.equal(gpu, tensor)  # on CPU the device path decodes with the same libjpeg-turbo
    built = get_dataset("imagenet", jpegs, "train", decode="tensor")  # a dataset built for a backend keeps it
    assert get_features(enc, built, cache_dir=tmp_path, **FAST).meta["cache_key"] == keys["tensor"]


def test_a_dataset_with_its_own_transform_keeps_its_backend(jpegs, tmp_path):
    from ijepa_eval.data import eval_transform, get_dataset
    from ijepa_eval.features import get_features

    ds = get_dataset("imagenet", jpegs, "train", transform=eval_transform("imagenet", 32))
    with pytest.raises(ConfigError, match="brings its own transform and decodes with 'pil'"):
        get_features(tiny_encoder(), ds, cache_dir=tmp_path, decode="tensor", **FAST)
    with pytest.raises(ConfigError, match="unknown decode backend"):
        get_features(tiny_encoder(), get_dataset("imagenet", jpegs, "train"), cache_dir=tmp_path, decode="nv", **FAST)


def test_loader_clock_tells_a_loader_bound_loop():
    import time

    from ijepa_eval.features.shard_writer import LoaderClock

    def slow_batches(n, wait):
        for i in range(n):
            time.sleep(wait)
            yield [i]

    starved = LoaderClock()
    for _ in starved.timed(slow_batches(6, 0.02), len):
        pass
    assert starved.warning() is None  # a loop of 0.1 s proves nothing: only loops of 10 s and more warn
    warning = starved.warning(min_seconds=0)
    assert starved.images == 5 and "loader-bound:" in warning and "--decode tensor" in warning
    assert "--decode" not in starved.warning("tensor", 0) and "more --workers" in starved.warning("tensor", 0)
    assert 0.2 < starved.summary()["loader_wait_fraction"] <= 1
    busy = LoaderClock()
    for _ in busy.timed(slow_batches(6, 0.0), len):
        time.sleep(0.02)  # the encoder is the slow part
    assert busy.warning(min_seconds=0) is None
    loop_rate, encoder_rate = starved.rates()
    assert encoder_rate > 5 * loop_rate


def test_cli_decode_flag_and_result_json(jpegs, tmp_path, capsys):
    import json

    from ijepa_eval.cli import main

    assert main(["features", "--ckpt", "random:vit_tiny_patch16_224", "--dataset", "imagenet", "--root", str(jpegs),
                 "--split", "train", "--cache-dir", str(tmp_path), "--workers", "0", "--device", "cpu",
                 "--decode", "tensor", "--quiet"]) == 0
    meta = json.loads(next(tmp_path.glob("*/meta.json")).read_text())
    assert meta["key_fields"]["decode"] == "tensor"
    capsys.readouterr()
    assert main(["features", "--ckpt", "random:vit_tiny_patch16_224", "--dataset", "imagenet", "--root", str(jpegs),
                 "--cache-dir", str(tmp_path), "--device", "cpu", "--decode", "jpeg"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown decode backend (--decode) 'jpeg'" in err[0]


def test_a_protocol_records_its_backend_and_extracts_with_it(tmp_path):
    import json

    from fixtures_checkpoints import write_ijepa_checkpoint

    from ijepa_eval.data.synthetic import write_imagenet_like
    from ijepa_eval.protocols import run_protocol
    from ijepa_eval.results import load_result

    write_ijepa_checkpoint(tmp_path / "tiny.pth.tar", depth=4, img_size=32)
    root = write_imagenet_like(tmp_path / "in", n_classes=2, n_train_per_class=6, n_val_per_class=3)
    path = run_protocol("knn", tmp_path / "tiny.pth.tar", root=root, out_dir=tmp_path / "runs", progress=False,
                        overrides=["decode=tensor"], cache_dir=tmp_path / "cache", device="cpu", num_workers=0)
    result = load_result(path)
    assert result.features["decode"] == "tensor" and result.protocol["config"]["decode"] == "tensor"
    metas = [json.loads(p.read_text()) for p in (tmp_path / "cache").glob("*/meta.json")]
    assert metas and all(m["key_fields"]["decode"] == "tensor" for m in metas)
