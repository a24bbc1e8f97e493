"""`ijepa-eval features` (export) and `ijepa-eval cache ls/rm` on an official-format I-JEPA checkpoint."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_checkpoints import write_ijepa_checkpoint

from ijepa_eval.cli import main
from ijepa_eval.data import get_dataset
from ijepa_eval.data.synthetic import write_cifar100
from ijepa_eval.encoders import load_encoder
from ijepa_eval.features import get_features

CONSOLE_SCRIPT = Path(sys.executable).parent / "ijepa-eval"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("features-cli")
    ckpt = tmp / "IN1K-vit.t.16-ep3.pth.tar"
    write_ijepa_checkpoint(ckpt, depth=4)
    root = write_cifar100(tmp / "cifar", n_train=0, n_test=24)
    return tmp, ckpt, root


def features_argv(ckpt, root, cache, *extra):
    return ["features", "--ckpt", str(ckpt), "--dataset", "cifar100", "--root", str(root), "--split", "test",
            "--cache-dir", str(cache), "--workers", "0", "--device", "cpu", "--batch-size", "8", *extra]


def test_export_writes_the_chosen_representation(setup, capsys):
    tmp, ckpt, root = setup
    cache = tmp / "cache-export"
    assert main(features_argv(ckpt, root, cache, "--export", str(tmp / "last.npz"))) == 0
    assert "extracted in" in capsys.readouterr().out
    assert main(features_argv(ckpt, root, cache, "--representation", "concatPOOL4", "--export", str(tmp / "cat.npz"))) == 0
    assert "cache hit" in capsys.readouterr().out
    last, cat = np.load(tmp / "last.npz"), np.load(tmp / "cat.npz")
    assert last["features"].shape == (24, 192) and cat["features"].shape == (24, 4 * 192)
    assert last["features"].dtype == np.float32
    np.testing.assert_array_equal(cat["features"][:, -192:], last["features"])
    dataset = get_dataset("cifar100", root, "test")
    np.testing.assert_array_equal(last["labels"], dataset.labels)
    # the same numbers as the library on the target encoder, computed without the cache
    encoder = load_encoder(ckpt)
    expected = get_features(encoder, dataset, cache_dir=tmp / "cache-lib", num_workers=0, device="cpu", progress=False)
    torch.testing.assert_close(torch.from_numpy(cat["features"]), expected.representation("concatPOOL4"), atol=0, rtol=0)
    context = get_features(load_encoder(ckpt, branch="context"), dataset, cache_dir=cache, num_workers=0,
                           device="cpu", progress=False)
    assert context.meta["cache_key"] != expected.meta["cache_key"]
    assert not np.allclose(context.representation("lastPOOL").numpy(), last["features"])


def test_cache_ls_and_rm(setup, capsys):
    tmp, ckpt, root = setup
    cache = tmp / "cache-ls"
    assert main(["cache", "ls", "--cache-dir", str(cache)]) == 0
    assert "no cached features" in capsys.readouterr().out
    assert main(features_argv(ckpt, root, cache)) == 0
    assert main(features_argv(ckpt, root, cache, "--branch", "context")) == 0
    capsys.readouterr()
    listing = subprocess.run([str(CONSOLE_SCRIPT), "cache", "ls", "--cache-dir", str(cache)],
                             capture_output=True, text=True, check=True).stdout.splitlines()
    assert listing[0].split() == ["KEY", "CHECKPOINT", "BRANCH", "DATASET/SPLIT", "N", "REPRESENTATIONS", "SIZE",
                                  "COMPLETE"]
    rows = [line.split() for line in listing[1:]]
    assert len(rows) == 2 and all(r[1] == ckpt.name and r[4] == "cifar100/test" and r[5] == "24" for r in rows)
    assert sorted(r[3] for r in rows) == ["context", "target"]  # the two entries of one file are told apart
    assert all(r[6] == "lastPOOL,concatPOOL4" and r[-1] == "yes" for r in rows)
    keys = [r[0] for r in rows]
    assert main(["cache", "rm", keys[0], "--cache-dir", str(cache)]) == 0
    assert not (cache / keys[0]).exists() and (cache / keys[1]).exists()
    assert main(["cache", "rm", "cifar100-test-nope", "--cache-dir", str(cache)]) == 2
    assert "unknown cache entry 'cifar100-test-nope'" in capsys.readouterr().err
    assert main(["cache", "rm", "--cache-dir", str(cache)]) == 2
    assert main(["cache", "rm", "--all", "--cache-dir", str(cache)]) == 0
    assert not any(cache.iterdir())


def test_bad_representation_fails_before_extracting(setup, capsys):
    tmp, ckpt, root = setup
    cache = tmp / "cache-bad"
    assert main(features_argv(ckpt, root, cache, "--representation", "lastCLS")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown representation 'lastCLS'" in err and "lastPOOL" in err
    assert not cache.exists()
    assert main(features_argv(ckpt, root, cache, "--split", "val")) == 2
    assert "val" in capsys.readouterr().err


@pytest.mark.parametrize("flags, fragment", [(["--device", "gpu"], "invalid device 'gpu'"),
                                             (["--workers", "-1"], "must be >= 0")])
def test_bad_device_or_workers_is_one_line_error(setup, capsys, flags, fragment):
    tmp, ckpt, root = setup
    cache = tmp / "cache-bad-device"
    assert main(features_argv(ckpt, root, cache, *flags)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and fragment in err
    assert not cache.exists()
