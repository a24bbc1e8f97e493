"""get_features and its cache on tiny ViTs and tiny datasets in their real on-disk formats (CPU)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from ijepa_eval.data import eval_transform, get_dataset, vjepa_transform
from ijepa_eval.data.synthetic import write_cifar100, write_imagenet
from ijepa_eval.encoders import encoder_from_vit
from ijepa_eval.errors import CacheError, ConfigError, DatasetError
from ijepa_eval.features import cache_entry_for, get_features
from ijepa_eval.features.planning import describe_transform

FAST = dict(batch_size=8, num_workers=0, shard_rows=16, progress=False, device="cpu")


def tiny_encoder(cls_token: bool = False, seed: int = 0, info: dict | None = None):
    torch.manual_seed(seed)
    pool = dict(class_token=True, global_pool="token") if cls_token else dict(class_token=False, global_pool="avg", fc_norm=False)
    vit = VisionTransformer(img_size=32, patch_size=16, embed_dim=48, depth=4, num_heads=3, num_classes=0, **pool)
    return encoder_from_vit(vit, info)


class CountingForward:
    """Counts encoder.forward_pooled calls; raises on call number ``fail_at`` (simulates a killed run)."""

    def __init__(self, encoder, fail_at: int | None = None):
        self.calls, self.fail_at, self.forward = 0, fail_at, encoder.forward_pooled
        encoder.forward_pooled = self

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.fail_at:
            raise KeyboardInterrupt("simulated kill")
        return self.forward(*args, **kwargs)


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    return write_cifar100(tmp_path_factory.mktemp("cifar"), n_train=24, n_test=40)


@pytest.fixture
def cifar_test(cifar_root):
    return get_dataset("cifar100", cifar_root, "test")


def direct_features(encoder, dataset, pool: str, n: int) -> torch.Tensor:
    transform = eval_transform(dataset.name, encoder.img_size)
    x = torch.stack([transform(dataset[i][0]) for i in range(len(dataset))])
    with torch.inference_mode():
        return encoder.forward_features(x, n_last_blocks=n, pool=pool)


@pytest.mark.parametrize("cls_token", [False, True])
def test_features_equal_forward_features_and_second_call_is_a_hit(tmp_path, cifar_test, cls_token):
    enc = tiny_encoder(cls_token)
    fs = get_features(enc, cifar_test, cache_dir=tmp_path, **FAST)
    assert not fs.meta["cache_hit"] and fs.meta["n"] == len(fs) == 40
    np.testing.assert_array_equal(fs.labels, cifar_test.labels)
    np.testing.assert_array_equal(fs.indices, np.arange(40))
    pools = [("avg", "POOL"), ("cls", "CLS")] if cls_token else [("avg", "POOL")]
    for pool, kind in pools:
        concat = fs.representation(f"concat{kind}4")
        assert concat.dtype == torch.float32 and concat.shape == (40, 4 * 48)
        torch.testing.assert_close(concat, direct_features(enc, cifar_test, pool, 4), atol=2e-3, rtol=1e-3)
        torch.testing.assert_close(fs.representation(f"last{kind}"), concat[:, -48:], atol=0, rtol=0)
        torch.testing.assert_close(fs.representation(f"concat{kind}2"), concat[:, -96:], atol=0, rtol=0)
    assert fs.available_representations() == (
        ["lastPOOL", "concatPOOL4", "lastCLS", "concatCLS4"] if cls_token else ["lastPOOL", "concatPOOL4"]
    )
    counter = CountingForward(enc, fail_at=1)  # any forward call would raise
    again = get_features(enc, cifar_test, cache_dir=tmp_path, **FAST)
    assert counter.calls == 0 and again.meta["cache_hit"]
    torch.testing.assert_close(again.representation("concatPOOL4"), fs.representation("concatPOOL4"), atol=0, rtol=0)


def test_interrupted_run_resumes_only_missing_shards(tmp_path, cifar_test):
    enc = tiny_encoder()
    reference = get_features(enc, cifar_test, cache_dir=tmp_path / "clean", **FAST).representation("concatPOOL4")
    counter = CountingForward(enc, fail_at=4)  # 40 rows, shards of 16, batches of 8: shard 0 done, shard 1 half
    with pytest.raises(KeyboardInterrupt):
        get_features(enc, cifar_test, cache_dir=tmp_path / "run", **FAST)
    entry, _ = cache_entry_for(enc, cifar_test, cache_dir=tmp_path / "run", n_last_blocks=4)
    assert not entry.is_complete()
    assert sorted(p.name for p in entry.path.glob("*.npy")) == ["avg-00000.npy"]  # no half shard on disk
    counter.calls, counter.fail_at = 0, None
    resumed = get_features(enc, cifar_test, cache_dir=tmp_path / "run", **FAST)
    assert counter.calls == 3  # shard 1 (2 batches) + shard 2 (8 rows, 1 batch)
    torch.testing.assert_close(resumed.representation("concatPOOL4"), reference, atol=0, rtol=0)
    assert entry.is_complete() and not resumed.meta["cache_hit"]


def test_truncated_or_bit_flipped_shard_is_rebuilt(tmp_path, cifar_test):
    enc = tiny_encoder()
    reference = get_features(enc, cifar_test, cache_dir=tmp_path, **FAST).representation("concatPOOL4")
    entry, _ = cache_entry_for(enc, cifar_test, cache_dir=tmp_path, n_last_blocks=4)
    shard1, shard2 = entry.path / "avg-00001.npy", entry.path / "avg-00002.npy"
    shard1.write_bytes(shard1.read_bytes()[:-10])  # truncated
    data = bytearray(shard2.read_bytes())
    data[-3] ^= 0xFF  # same size, one float flipped
    shard2.write_bytes(bytes(data))
    counter = CountingForward(enc)
    rebuilt = get_features(enc, cifar_test, cache_dir=tmp_path, **FAST)
    assert counter.calls == 3 and not rebuilt.meta["cache_hit"]  # shards 1 and 2 only
    torch.testing.assert_close(rebuilt.representation("concatPOOL4"), reference, atol=0, rtol=0)


def test_meta_json_describes_the_cache(tmp_path, cifar_test):
    enc = tiny_encoder(info={"sha256": "ab" * 32, "branch": "target", "source": "/ckpt/x.pth.tar"})
    fs = get_features(enc, cifar_test, cache_dir=tmp_path, **FAST)
    meta = json.loads((tmp_path / fs.meta["cache_key"] / "meta.json").read_text())
    assert meta["complete"] and meta["dtype"] == "float16" and meta["n"] == 40 and meta["embed_dim"] == 48
    assert [(s["start"], s["stop"]) for s in meta["shards"]] == [(0, 16), (16, 32), (32, 40)]
    assert meta["key_fields"]["checkpoint_sha256"] == "ab" * 32 and meta["key_fields"]["branch"] == "target"
    assert meta["timings"]["extracted_rows"] == 40
    stored = np.load(tmp_path / fs.meta["cache_key"] / "avg-00000.npy")
    assert stored.dtype == np.float16 and stored.shape == (16, 4, 48)


def test_key_changes_with_everything_that_changes_the_numbers(tmp_path, cifar_root, cifar_test):
    def key(enc, ds, n=4):
        return cache_entry_for(enc, ds, cache_dir=tmp_path, n_last_blocks=n)[0].key

    base = key(tiny_encoder(), cifar_test)
    assert key(tiny_encoder(), get_dataset("cifar100", cifar_root, "test")) == base  # deterministic
    assert key(tiny_encoder(seed=1), cifar_test) != base  # other weights (in-memory: weights hash)
    assert key(tiny_encoder(info={"sha256": "0" * 64}), cifar_test) != key(tiny_encoder(info={"sha256": "1" * 64}), cifar_test)
    assert key(tiny_encoder(info={"branch": "target"}), cifar_test) != key(tiny_encoder(info={"branch": "context"}), cifar_test)
    assert key(tiny_encoder(), get_dataset("cifar100", cifar_root, "train")) != base  # split
    other = get_dataset("cifar100", cifar_root, "test", transform=eval_transform("places205", 32))
    assert key(tiny_encoder(), other) != base  # transform (bilinear instead of cifar100's bicubic)
    assert key(tiny_encoder(), cifar_test, n=2) != base  # layers
    assert key(tiny_encoder(), cifar_test).startswith("cifar100-test-")


def test_corrupt_image_names_the_file_and_caches_nothing(tmp_path):
    root = write_imagenet(tmp_path / "in", n_classes=2, n_train_per_class=4, n_val_per_class=1)
    ds = get_dataset("imagenet", root, "train")
    bad = root / ds.files[5]
    bad.write_bytes(b"not a jpeg")
    enc = tiny_encoder()
    with pytest.raises(DatasetError, match=bad.name):
        get_features(enc, ds, cache_dir=tmp_path / "cache", **FAST)
    entry, _ = cache_entry_for(enc, ds, cache_dir=tmp_path / "cache", n_last_blocks=4)
    assert not entry.is_complete() and not list(entry.path.glob("*.npy"))
    fs = get_features(enc, ds, cache_dir=tmp_path / "cache", **{**FAST, "skip_bad_images": True})
    assert len(fs) == 7 and fs.meta["bad_indices"] == [5] and bad.name in fs.meta["bad"][0]["error"]
    np.testing.assert_array_equal(fs.indices, [0, 1, 2, 3, 4, 6, 7])
    np.testing.assert_array_equal(fs.labels, np.delete(ds.labels, 5))
    assert fs.representation("lastPOOL").shape == (7, 48)
    with pytest.raises(DatasetError, match="skip-bad-images"):  # a strict call does not silently reuse it
        get_features(enc, ds, cache_dir=tmp_path / "cache", **FAST)


def test_empty_split_and_bad_labels_fail_before_writing(tmp_path, cifar_test):
    enc = tiny_encoder()
    cifar_test.labels = cifar_test.labels.copy()
    cifar_test.labels[3] = 100
    with pytest.raises(DatasetError, match=r"outside \[0, 99\]"):
        get_features(enc, cifar_test, cache_dir=tmp_path, **FAST)
    cifar_test.labels = cifar_test.labels[:0]
    with pytest.raises(DatasetError, match="empty"):
        get_features(enc, cifar_test, cache_dir=tmp_path, **FAST)
    assert not any(tmp_path.iterdir())


def test_features_beyond_float16_range_are_an_error(tmp_path, cifar_test):
    enc = tiny_encoder()
    with torch.no_grad():
        enc.vit.norm.weight.mul_(1e6)
    with pytest.raises(CacheError, match="float16"):
        get_features(enc, cifar_test, cache_dir=tmp_path, **FAST)
    entry, _ = cache_entry_for(enc, cifar_test, cache_dir=tmp_path, n_last_blocks=4)
    assert not entry.is_complete() and not list(entry.path.glob("*.npy"))


def test_unknown_representation_lists_the_available_ones(tmp_path, cifar_test):
    fs = get_features(tiny_encoder(), cifar_test, cache_dir=tmp_path, **{**FAST, "n_last_blocks": 2})
    for name in ("concatPOOL4", "lastCLS", "lastPOOL2", "concatPOOL1", "pool"):
        with pytest.raises(ConfigError, match="Available: concatPOOL2, lastPOOL"):
            fs.representation(name)


def test_default_cache_dir_comes_from_the_environment(tmp_path, monkeypatch, cifar_test):
    monkeypatch.setenv("IJEPA_EVAL_CACHE", str(tmp_path / "env-cache"))
    fs = get_features(tiny_encoder(), cifar_test, **FAST)
    assert (tmp_path / "env-cache" / fs.meta["cache_key"] / "meta.json").is_file()


@pytest.mark.parametrize("drop", [False, True])
def test_representation_slices_blocks_without_doubling_memory(drop):
    import tracemalloc

    from ijepa_eval.features import FeatureSet

    rng = np.random.default_rng(0)
    shards = [rng.standard_normal((rows, 4, 64)).astype(np.float16) for rows in [600] * 9 + [100]]
    keep = rng.random(5500) > 0.3 if drop else None
    n = 5500 if keep is None else int(keep.sum())
    fs = FeatureSet(labels=np.zeros(n, np.int64), indices=np.arange(n), num_classes=1, meta={}, n_last_blocks=4,
                    pools=["avg"], shards={"avg": shards}, keep=keep)
    full = np.concatenate(shards).astype(np.float32)
    if keep is not None:
        full = full[keep]
    tracemalloc.start()
    try:
        concat = fs.representation("concatPOOL4")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(concat.numpy(), full.reshape(n, -1))
    assert peak < 1.25 * concat.numpy().nbytes  # the float32 result plus at most one float16 shard
    np.testing.assert_array_equal(fs.representation("concatPOOL2").numpy(), full[:, 2:].reshape(n, -1))
    np.testing.assert_array_equal(fs.representation("lastPOOL").numpy(), full[:, 3])


def test_opening_a_cache_checks_shard_hashes_in_parallel(tmp_path, cifar_test, monkeypatch):
    import threading

    from ijepa_eval.features import cache

    enc = tiny_encoder()
    get_features(enc, cifar_test, cache_dir=tmp_path, **FAST)  # 3 shards
    together = threading.Barrier(2, timeout=10)  # the first two hashes must run at the same time
    calls, lock, hash_file = [], threading.Lock(), cache.sha256_file

    def sha256_file(path):
        with lock:
            calls.append(path)
            first_two = len(calls) <= 2
        if first_two:
            together.wait()
        return hash_file(path)

    monkeypatch.setattr(cache, "sha256_file", sha256_file)
    CountingForward(enc, fail_at=1)
    assert get_features(enc, cifar_test, cache_dir=tmp_path, **FAST).meta["cache_hit"]
    assert len([c for c in calls if Path(c).name != "labels.npy"]) == 3  # labels.npy is hashed too


def test_another_shard_size_reuses_the_entry(tmp_path, cifar_test):
    enc = tiny_encoder()
    counter = CountingForward(enc, fail_at=4)  # shard 0 of 16 rows committed, then killed
    with pytest.raises(KeyboardInterrupt):
        get_features(enc, cifar_test, cache_dir=tmp_path, **FAST)
    counter.calls, counter.fail_at = 0, None
    resumed = get_features(enc, cifar_test, cache_dir=tmp_path, **{**FAST, "shard_rows": 8})
    assert counter.calls == 3 and [(s["start"], s["stop"]) for s in resumed.meta["shards"]] == [(0, 16), (16, 32), (32, 40)]
    hit = get_features(enc, cifar_test, cache_dir=tmp_path, **{**FAST, "shard_rows": 4096})
    assert hit.meta["cache_hit"] and counter.calls == 3
    torch.testing.assert_close(hit.representation("concatPOOL4"), direct_features(enc, cifar_test, "avg", 4),
                               atol=2e-3, rtol=1e-3)


@pytest.mark.parametrize("cls_token", [False, True])
def test_patch_tokens_are_cached_with_the_same_rules(tmp_path, cifar_test, cls_token):
    """tokens=True stores forward_tokens (patch tokens after the final norm, prefix tokens dropped) under its
    own key, resumes shard by shard and is a hit the second time."""
    enc = tiny_encoder(cls_token)
    transform = eval_transform(cifar_test.name, enc.img_size)
    x = torch.stack([transform(cifar_test[i][0]) for i in range(len(cifar_test))])
    with torch.inference_mode():
        direct = enc.vit.forward_features(x)[:, enc.num_prefix_tokens:]  # timm: every token through the norm
    pooled = CountingForward(enc, fail_at=1)  # the pooled path must not run
    forward = enc.forward_tokens
    enc.forward_tokens = FailOnce(forward, fail_at=4)  # 40 rows, shards of 16, batches of 8: killed in shard 1
    with pytest.raises(KeyboardInterrupt):
        get_features(enc, cifar_test, cache_dir=tmp_path, tokens=True, **FAST)
    enc.forward_tokens = FailOnce(forward, fail_at=None)
    fs = get_features(enc, cifar_test, cache_dir=tmp_path, tokens=True, **FAST)
    assert enc.forward_tokens.calls == 3  # shard 0 was kept: shard 1 (2 batches) + shard 2 (1 batch)
    tokens = fs.tokens()
    assert tokens.dtype == torch.float16 and tokens.shape == (40, enc.num_patches, 48) and fs.pools == ["tokens"]
    assert fs.available_representations() == ["lastTOKENS"]  # what `cache ls` lists
    torch.testing.assert_close(tokens.float(), direct, atol=2e-3, rtol=1e-3)
    pooled_entry, _ = cache_entry_for(enc, cifar_test, cache_dir=tmp_path)
    tokens_entry, fields = cache_entry_for(enc, cifar_test, cache_dir=tmp_path, tokens=True)
    assert pooled_entry.path != tokens_entry.path and fields["pools"] == ["tokens"]
    # the decode backend and the extraction transform (attentive probes' V-JEPA eval transform) are in the key
    tensor_entry, tensor_fields = cache_entry_for(enc, cifar_test, cache_dir=tmp_path, tokens=True, decode="tensor")
    vjepa = vjepa_transform(enc.img_size, normalize=False)
    vjepa_entry, vjepa_fields = cache_entry_for(enc, cifar_test, cache_dir=tmp_path, tokens=True, transform=vjepa)
    assert (fields["decode"], tensor_fields["decode"]) == ("pil", "tensor")
    assert len({tokens_entry.path, tensor_entry.path, vjepa_entry.path}) == 3
    assert vjepa_fields["transform"].startswith(describe_transform(vjepa)) and "Normalize" in vjepa_fields["transform"]
    with pytest.raises(ConfigError, match="brings its own transform; build it without one"):
        cache_entry_for(enc, get_dataset("cifar100", cifar_test.root, "test", transform=vjepa), tokens=True,
                        transform=vjepa)
    enc.forward_tokens = FailOnce(forward, fail_at=1)
    assert get_features(enc, cifar_test, cache_dir=tmp_path, tokens=True, **FAST).meta["cache_hit"]
    assert pooled.calls == 0
    pooled.fail_at = None
    with pytest.raises(ConfigError, match="not patch tokens"):
        get_features(enc, cifar_test, cache_dir=tmp_path, **FAST).tokens()


class FailOnce:
    """A forward that counts its calls and raises KeyboardInterrupt on call ``fail_at``."""

    def __init__(self, forward, fail_at: int | None):
        self.forward, self.fail_at, self.calls = forward, fail_at, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.fail_at:
            raise KeyboardInterrupt("simulated kill")
        return self.forward(*args, **kwargs)
