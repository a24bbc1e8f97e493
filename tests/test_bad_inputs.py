"""Bad inputs and environment faults through the real CLI: one line on stderr, non-zero exit, no traceback,
nothing half-written and nothing outside the folder the command was given.

Most cases run in-process through ``ijepa_eval.cli.main(argv)`` (an uncaught exception there is a
traceback for a user); only a closed stdout and the two-process lock need real processes. Every case
snapshots the whole pytest temp tree before and after, so a write anywhere else is caught.

Read-only folders: the tests run as root, where chmod does not stop writes, so EROFS is simulated by
making ``os.open``/``mkstemp`` raise ``OSError(EROFS)`` under the chosen folder; disk full likewise raises
``OSError(ENOSPC)`` from the write path.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import traceback
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from ijepa_eval.cli import main
from ijepa_eval.data.clevr_mini import render_clevr_mini
from ijepa_eval.data.synthetic import write_cifar100, write_imagenet, write_parquet
from ijepa_eval.errors import IjepaEvalError
from ijepa_eval.paths import inside, safe_component

sys.path.insert(0, str(Path(__file__).parent))
from fixtures_checkpoints import write_ijepa_checkpoint, write_malicious_checkpoint  # noqa: E402
from test_io import file_size_limit  # noqa: E402

FAST = ["epochs=1", "batch_size=16"]
REPO = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------------------------------ the world


def write_clevr(root: Path, scenes_train: list[Any] | None = None, n: int = 12) -> Path:
    """A CLEVR v1.0 tree with tiny PNGs; ``scenes_train`` replaces the train scenes list when given."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        scenes = []
        for i in range(n):
            name = f"CLEVR_{split}_{i:06d}.png"
            Image.fromarray(rng.integers(0, 255, (16, 16, 4), dtype=np.uint8)).save(root / "images" / split / name)
            objects = [{"pixel_coords": [1, 2, 8.0 + 0.3 * j]} for j in range(3 + i % 4)]
            scenes.append({"image_index": i, "image_filename": name, "objects": objects})
        if split == "train" and scenes_train is not None:
            scenes = scenes_train
        (root / "scenes").mkdir(exist_ok=True)
        (root / "scenes" / f"CLEVR_{split}_scenes.json").write_text(json.dumps({"scenes": scenes}))
    return root


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("world")
    write_ijepa_checkpoint(d / "tiny.pth.tar", depth=4, img_size=32)
    return {
        "dir": d,
        "ckpt": d / "tiny.pth.tar",
        "cifar": write_cifar100(d / "cifar", n_train=40, n_test=16),
        "folder": write_imagenet(d / "folder", n_classes=3, n_train_per_class=6, n_val_per_class=2),
        "clevr": write_clevr(d / "clevr"),
    }


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """A fresh working folder: cwd, HOME and the default cache all point inside it."""
    sb = tmp_path / "sandbox"
    sb.mkdir()
    monkeypatch.chdir(sb)
    monkeypatch.setenv("HOME", str(sb / "home"))
    monkeypatch.setenv("IJEPA_EVAL_CACHE", str(sb / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return sb


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            p = os.path.join(dirpath, name)
            with contextlib.suppress(FileNotFoundError):
                st = os.stat(p)
                out[p] = (st.st_size, st.st_mtime_ns)
    return out


@dataclass
class Outcome:
    rc: int | None
    stdout: str
    stderr: str
    tb: str | None
    created: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)


def run_cli(argv: list[str], watch: Path) -> Outcome:
    """``main(argv)`` in-process with captured streams and a before/after snapshot of ``watch``."""
    before = snapshot(watch)
    out, err = io.StringIO(), io.StringIO()
    rc, tb = None, None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main([str(a) for a in argv])
        except SystemExit as exit_:
            rc = exit_.code if isinstance(exit_.code, int) else 1
        except BaseException:  # noqa: BLE001 - an escaping exception is exactly what a case must catch
            tb = traceback.format_exc()
    after = snapshot(watch)
    created = sorted(set(after) - set(before))
    changed = sorted(p for p in set(after) & set(before) if after[p] != before[p])
    return Outcome(rc, out.getvalue(), err.getvalue(), tb, created, changed)


def assert_one_line_error(o: Outcome, match: str | None = None) -> str:
    assert o.tb is None, f"traceback:\n{o.tb}"
    assert o.rc not in (0, None), f"accepted (rc={o.rc}); stdout: {o.stdout[-500:]}"
    lines = [ln for ln in o.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("ijepa-eval"), f"stderr is not one ijepa-eval line: {lines}"
    assert "Traceback" not in o.stderr
    if match:
        assert match.lower() in lines[0].lower(), lines[0]
    return lines[0]


def assert_no_leftovers(o: Outcome, allowed: tuple[Path, ...] = ()) -> None:
    """No temp files anywhere; new or changed files only under ``allowed`` folders."""
    touched = o.created + o.changed
    temps = [p for p in touched if Path(p).name.endswith(".tmp") or Path(p).name.startswith(".")]
    assert not temps, f"temp files left behind: {temps}"
    outside = [p for p in touched if not any(Path(p).is_relative_to(a) for a in allowed)]
    assert not outside, f"written outside {[str(a) for a in allowed]}: {outside}"


# ------------------------------------------------------------------------------------------------ the corpus


def ckpt_args(world, ckpt=None):
    return ["--ckpt", ckpt or world["ckpt"], "--device", "cpu", "--workers", "0"]


def features_argv(world, sb, *extra, ckpt=None, dataset="cifar100", root=None, split="test"):
    return ["features", *ckpt_args(world, ckpt), "--dataset", dataset, "--root", root or world["cifar"],
            "--split", split, "--cache-dir", sb / "cache", "--batch-size", "8", "--quiet", *extra]


def protocol_argv(world, sb, verb, *extra, root=None, ckpt=None):
    return [*verb, *ckpt_args(world, ckpt), "--root", root or world["cifar"], "--cache-dir", sb / "cache",
            "--out", sb / "out", "--quiet", *FAST, *extra]


def write_truncated(world, sb):
    data = Path(world["ckpt"]).read_bytes()
    (sb / "trunc.pth").write_bytes(data[: len(data) // 2])
    return sb / "trunc.pth"


def write_short_record(world, sb):
    """A zip checkpoint whose tensor record is shorter than its storage says (an inconsistent archive)."""
    src, dst = zipfile.ZipFile(world["ckpt"]), sb / "short.pth"
    with zipfile.ZipFile(dst, "w") as out:
        for info in src.infolist():
            data = src.read(info)
            if "/data/" in info.filename and len(data) > 64:
                data = data[: len(data) // 2]
            out.writestr(info, data)
    return dst


def write_record_cut_short(world, sb):
    """One tensor record 8 bytes short, more of the archive after it: torch.load(mmap=True) maps the next
    record's bytes into the tensor and loads without a word (inspect used to exit 0 on it)."""
    src, dst = zipfile.ZipFile(world["ckpt"]), sb / "cut.pth"
    victim = next(i.filename for i in src.infolist() if "/data/" in i.filename and i.file_size > 4096)
    with zipfile.ZipFile(dst, "w") as out:
        for info in src.infolist():
            data = src.read(info)
            out.writestr(info, data[:-8] if info.filename == victim else data)
    return dst


def write_state(sb, name, obj):
    torch.save(obj, sb / name)
    return sb / name


def encoder_sd(world):
    return {k.removeprefix("module."): v for k, v in torch.load(world["ckpt"], weights_only=True)["target_encoder"].items()}


def missing_block(world, sb):
    sd = {k: v for k, v in encoder_sd(world).items() if not k.startswith("blocks.0.")}
    return write_state(sb, "gap.pth", sd)


def wrong_shape(world, sb):
    sd = encoder_sd(world)
    sd["blocks.1.attn.qkv.weight"] = sd["blocks.1.attn.qkv.weight"][:10]
    return write_state(sb, "shape.pth", sd)


CHECKPOINT_CASES: dict[str, tuple[Callable, str | None]] = {
    "missing": (lambda w, sb: sb / "nope.pth", "nope.pth"),
    "empty": (lambda w, sb: (sb / "empty.pth").write_bytes(b"") and None or sb / "empty.pth", "empty"),
    "random-bytes": (lambda w, sb: (sb / "rand.pth").write_bytes(os.urandom(999)) and None or sb / "rand.pth", None),
    "truncated-zip": (write_truncated, None),
    "short-record": (write_short_record, None),
    "record-cut-short": (write_record_cut_short, "storage record"),
    "malicious-pickle": (lambda w, sb: write_malicious_checkpoint(sb / "evil.pth", sb / "pwned") or sb / "evil.pth",
                         "trust-checkpoint"),
    "top-level-list": (lambda w, sb: write_state(sb, "list.pth", [torch.zeros(3)]), None),
    "top-level-int": (lambda w, sb: write_state(sb, "int.pth", 7), None),
    "branch-is-string": (lambda w, sb: write_state(sb, "str.pth", {"target_encoder": "oops", "encoder": "x"}), None),
    "missing-block": (missing_block, None),
    "wrong-shape": (wrong_shape, None),
    "truncated-safetensors": (lambda w, sb: (sb / "t.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{") and None
                              or sb / "t.safetensors", None),
}


@pytest.mark.parametrize("command", ["inspect", "features"])
@pytest.mark.parametrize("case", list(CHECKPOINT_CASES))
def test_bad_checkpoint(world, sandbox, case, command):
    make, match = CHECKPOINT_CASES[case]
    path = make(world, sandbox)
    argv = ["inspect", path] if command == "inspect" else features_argv(world, sandbox, ckpt=path)
    o = run_cli(argv, sandbox.parent.parent)
    assert_one_line_error(o, match)
    assert_no_leftovers(o)
    assert not (sandbox / "pwned").exists()


# datasets -----------------------------------------------------------------------------------------------


def clevr_with(objects_of):
    def make(world, sb):
        scenes = [{"image_index": i, "image_filename": f"CLEVR_train_{i:06d}.png", "objects": objects_of(i)}
                  for i in range(12)]
        root = write_clevr(sb / "data" / "clevr")
        (root / "scenes" / "CLEVR_train_scenes.json").write_text(json.dumps({"scenes": scenes}))
        return ["clevr_count", root, "train"]
    return make


def clevr_scenes(value):
    def make(world, sb):
        root = write_clevr(sb / "data" / "clevr")
        (root / "scenes" / "CLEVR_train_scenes.json").write_text(json.dumps(value))
        return ["clevr_count", root, "train"]
    return make


def cifar_with(**changes):
    def make(world, sb):
        root = write_cifar100(sb / "data" / "cifar", n_train=0, n_test=8)
        path = root / "cifar-100-python" / "test"
        with open(path, "rb") as f:
            obj = pickle.load(f, encoding="latin1")
        obj.update(changes)
        with open(path, "wb") as f:
            pickle.dump(obj, f)
        return ["cifar100", root, "test"]
    return make


def folder_without_val(world, sb):
    root = write_imagenet(sb / "data" / "folder", n_classes=2, n_train_per_class=2, n_val_per_class=1)
    shutil.rmtree(root / "val")
    return ["folder", root, "val"]


def corrupt_image(world, sb):
    root = write_imagenet(sb / "data" / "folder", n_classes=2, n_train_per_class=2, n_val_per_class=2)
    victim = sorted((root / "val").rglob("*.JPEG"))[0]
    victim.write_bytes(victim.read_bytes()[:40])
    return ["folder", root, "val"]


DATASET_CASES: dict[str, tuple[Callable, str | None]] = {
    "clevr-objects-string": (clevr_with(lambda i: "abcdef"), "objects"),
    "clevr-objects-dict": (clevr_with(lambda i: {"a": 1, "b": 2, "c": 3}), "objects"),
    "clevr-objects-too-many": (clevr_with(lambda i: [{"pixel_coords": [0, 0, 9.0]}] * 30), None),
    "clevr-scene-not-dict": (clevr_with(lambda i: None), None),
    "clevr-scenes-list-of-ints": (clevr_scenes({"scenes": [1, 2, 3]}), None),
    "clevr-scenes-not-list": (clevr_scenes({"scenes": {"a": 1}}), None),
    "clevr-top-level-list": (clevr_scenes([1, 2]), None),
    "clevr-no-scenes": (lambda w, sb: ["clevr_count", sb, "train"], None),
    "cifar-label-count": (cifar_with(fine_labels=[1, 2, 3]), None),
    "cifar-labels-not-ints": (cifar_with(fine_labels=["a"] * 8), None),
    "cifar-label-range": (cifar_with(fine_labels=[150] * 8), None),
    "cifar-data-shape": (cifar_with(data=np.zeros((8, 100), dtype=np.uint8)), None),
    "cifar-data-string": (cifar_with(data="pixels"), None),
    "cifar-no-labels": (cifar_with(coarse_labels=None, fine_labels=None), None),
    "folder-missing-split": (folder_without_val, "val"),
    "folder-corrupt-image": (corrupt_image, None),
    "unknown-dataset": (lambda w, sb: ["imagenett", sb, "train"], "imagenet"),
    "unknown-split": (lambda w, sb: ["cifar100", w["cifar"], "validation"], None),
    "hf-missing-path": (lambda w, sb: [f"hf:{sb / 'nope'}", sb, "train"], None),
}


@pytest.mark.parametrize("case", list(DATASET_CASES))
def test_bad_dataset(world, sandbox, case):
    make, match = DATASET_CASES[case]
    dataset, root, split = make(world, sandbox)
    o = run_cli(features_argv(world, sandbox, dataset=dataset, root=root, split=split), sandbox.parent.parent)
    assert_one_line_error(o, match)
    assert_no_leftovers(o)
    assert not (sandbox / "cache").exists() or not any((sandbox / "cache").iterdir()), "a cache entry was started"


# recipe and CLI values: refused before anything is extracted or written ------------------------------------

VALUE_CASES: dict[str, list[str]] = {
    "epochs-negative": ["epochs=-1"],
    "epochs-zero": ["epochs=0"],
    "batch-size-zero": ["batch_size=0"],
    "lr-negative": ["optimizer.base_lr=-0.1"],
    "holdout-above-one": ["selection.holdout_fraction=1.5"],
    "holdout-zero": ["selection.holdout_fraction=0"],
    "empty-grid": ["grid.lr_mults=[]"],
    "negative-wd": ["grid.wds=[-1]"],
    "n-last-blocks-zero": ["n_last_blocks=0"],
    "extraction-batch-zero": ["extraction_batch_size=0"],
    "knn-k-zero": ["knn.ks=[0]"],
    "unknown-key": ["epoch=3"],
    "wrong-type": ["epochs=three"],
    "python-tag": ["epochs=!!python/object/apply:os.system ['true']"],
    "seed-flag-negative": ["--seed", "-1"],
    "workers-negative": ["--workers", "-2"],
    "device-cuda": ["--device", "cuda:3"],
    "arch-bad-json": ["--arch", "{num_heads: 3"],
}


@pytest.mark.parametrize("case", list(VALUE_CASES))
def test_bad_recipe_value(world, sandbox, case):
    o = run_cli(protocol_argv(world, sandbox, ["transfer", "--dataset", "cifar100"], *VALUE_CASES[case]),
                sandbox.parent.parent)
    assert_one_line_error(o)
    assert_no_leftovers(o)


PRETRAIN_CASES: dict[str, list[str]] = {
    "steps-negative": ["--steps", "-3"],
    "steps-zero": ["--steps", "0"],
    "save-every-negative": ["--save-every", "-1"],
    "lr-negative": ["lr=-1"],
    "batch-zero": ["batch_size=0"],
    "unknown-config": ["--config", "tiny_gpu"],
    "resume-nothing": ["--resume"],
    "root-missing": ["--root", "/nonexistent/data"],
}


@pytest.mark.parametrize("case", list(PRETRAIN_CASES))
def test_bad_pretrain_value(sandbox, case):
    o = run_cli(["pretrain", "--out", sandbox / "run", "--no-progress", *PRETRAIN_CASES[case]], sandbox.parent.parent)
    assert_one_line_error(o)
    assert_no_leftovers(o)


# paths: no name from a recipe, label or dataset leaves --out ----------------------------------------------

EVIL_NAMES = {
    "parent": "../../escaped",
    "absolute": "/tmp/ijepa-eval-escaped",
    "nul": "bad\x00name",
    "newline": "line\nbreak",
    "long": "x" * 5000,
    "dots": "..",
}


@pytest.mark.parametrize("kind", list(EVIL_NAMES))
def test_recipe_name_stays_inside_out(world, sandbox, kind):
    raw = (REPO / "protocols" / "cifar100.yaml").read_text()
    recipe = sandbox / "evil.yaml"
    recipe.write_text(raw.replace("name: cifar100", f"name: {json.dumps(EVIL_NAMES[kind])}", 1))
    o = run_cli(protocol_argv(world, sandbox, ["run", recipe], "--label", EVIL_NAMES[kind]), sandbox.parent.parent)
    assert o.tb is None and o.rc == 0, o.tb or o.stderr
    assert_no_leftovers(o, allowed=(sandbox / "out", sandbox / "cache"))
    written = sorted((sandbox / "out").iterdir(), key=lambda p: p.suffix)  # the result, its predictions and head
    assert [p.suffix for p in written] == [".json", ".npz", ".safetensors"] and all(len(p.name) < 255 for p in written)
    assert written[1].name == written[0].name.removesuffix(".json") + ".predictions.npz"
    assert written[2].name == written[0].name.removesuffix(".json") + ".head.safetensors"
    assert not Path("/tmp/ijepa-eval-escaped").exists()


def test_hf_dataset_path_in_task_name_stays_inside_out(world, sandbox):
    """`knn --dataset hf:/abs/path` puts the dataset into the task name, and so into the result file name."""
    data = write_parquet(sandbox / "hf" / "set", n_per_split=(("train", 12), ("test", 6)))
    o = run_cli(protocol_argv(world, sandbox, ["knn", "--dataset", f"hf:{data}"], "knn.ks=[1]",
                              "dataset.test_split=test", f"dataset.options.cache_dir={sandbox / 'hf-cache'}"),
                sandbox.parent.parent)
    assert o.tb is None and o.rc == 0, o.tb or o.stderr
    # the HF `datasets` library keeps its own arrow cache (and lock files) in the cache_dir it is given
    assert_no_leftovers(o, allowed=(sandbox / "out", sandbox / "cache", sandbox / "hf-cache"))
    assert len(list((sandbox / "out").glob("*.json"))) == 1


# cache integrity: every file of an entry is checked on open ---------------------------------------------


def export(world, sb, name):
    o = run_cli(features_argv(world, sb, "--export", sb / name), sb.parent.parent)
    assert o.tb is None and o.rc == 0, o.tb or o.stderr
    return o, np.load(sb / name)


def only_entry(sb) -> Path:
    (entry,) = [p for p in (sb / "cache").iterdir() if p.is_dir()]
    return entry


def tamper_labels(entry):
    labels = np.load(entry / "labels.npy")
    np.save(entry / "labels.npy", (labels + 1) % 100)


def tamper_meta(field_, value):
    def tamper(entry):
        meta = json.loads((entry / "meta.json").read_text())
        meta[field_] = value
        (entry / "meta.json").write_text(json.dumps(meta))
    return tamper


def truncate_shard(entry):
    shard = sorted(entry.glob("avg-*.npy"))[0]
    shard.write_bytes(shard.read_bytes()[:-16])


def flip_shard_byte(entry):
    shard = sorted(entry.glob("avg-*.npy"))[0]
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0xFF
    shard.write_bytes(bytes(data))


TAMPER = {
    "labels-edited": tamper_labels,
    "labels-deleted": lambda e: (e / "labels.npy").unlink(),
    "meta-bad-indices": tamper_meta("bad_indices", [0, 1]),
    "meta-n": tamper_meta("n", 3),
    "meta-shards": tamper_meta("shards", []),
    "meta-garbage": lambda e: (e / "meta.json").write_text("{not json"),
    "shard-truncated": truncate_shard,
    "shard-bit-flip": flip_shard_byte,
    "record-deleted": lambda e: next(e.glob("shard-*.json")).unlink(),
}


@pytest.mark.parametrize("case", list(TAMPER))
def test_damaged_cache_is_rebuilt_never_served(world, sandbox, case):
    _, clean = export(world, sandbox, "clean.npz")
    TAMPER[case](only_entry(sandbox))
    o, again = export(world, sandbox, "again.npz")
    assert "cache hit" not in o.stdout  # re-committed or re-extracted, not served as it was
    for key in ("features", "labels", "indices"):
        np.testing.assert_array_equal(again[key], clean[key])
    assert_no_leftovers(o, allowed=(sandbox / "cache", sandbox / "again.npz"))


# environment faults -------------------------------------------------------------------------------------


def fail_writes_under(monkeypatch, folder: Path, code: int, after: int = 0, name: str = ""):
    """Writes under ``folder`` (to files whose name contains ``name``; after the first ``after``) fail.

    EROFS: creating the temp file fails, as on a read-only mount. ENOSPC: the data is written, then the
    flush to disk fails (``fsync``), as when the disk fills up half-way through a file.
    """
    seen = {"n": 0}

    def hit(path: str) -> bool:
        if not (Path(path).resolve().is_relative_to(folder.resolve()) and name in Path(path).name):
            return False
        seen["n"] += 1
        return seen["n"] > after

    if code == errno.EROFS:
        real_mkstemp = tempfile.mkstemp

        def mkstemp(*args, dir=None, prefix=None, **kwargs):
            if dir is not None and hit(str(Path(dir) / (prefix or ""))):
                raise OSError(code, os.strerror(code), str(dir))
            return real_mkstemp(*args, dir=dir, prefix=prefix, **kwargs)

        monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    else:
        real_fsync = os.fsync

        def fsync(fd):
            path = os.readlink(f"/proc/self/fd/{fd}")
            if hit(path):
                raise OSError(code, os.strerror(code), path)
            return real_fsync(fd)

        monkeypatch.setattr(os, "fsync", fsync)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
@pytest.mark.parametrize("after", [0, 1])
def test_cache_folder_fault_then_same_numbers(world, sandbox, monkeypatch, code, after):
    """A fault while writing shard files is one line; after it is fixed the run gives the clean numbers."""
    argv = features_argv(world, sandbox, "--export", sandbox / "out" / "f.npz")
    fail_writes_under(monkeypatch, sandbox / "cache", code, after=after)
    o = run_cli(argv, sandbox.parent.parent)
    assert_one_line_error(o, os.strerror(code))
    assert_no_leftovers(o, allowed=(sandbox / "cache",))
    monkeypatch.undo()
    monkeypatch.chdir(sandbox)
    o = run_cli(argv, sandbox.parent.parent)
    assert o.rc == 0 and o.tb is None, o.tb or o.stderr
    clean = run_cli(features_argv(world, sandbox, "--export", sandbox / "clean.npz", "--cache-dir",
                                  sandbox / "cache2"), sandbox.parent.parent)
    assert clean.rc == 0
    np.testing.assert_array_equal(np.load(sandbox / "out" / "f.npz")["features"],
                                  np.load(sandbox / "clean.npz")["features"])


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_results_folder_fault(world, sandbox, monkeypatch, code):
    run_cli(features_argv(world, sandbox), sandbox.parent.parent)  # warm cache: the fault hits the result
    fail_writes_under(monkeypatch, sandbox / "out", code)
    o = run_cli(protocol_argv(world, sandbox, ["transfer", "--dataset", "cifar100"]), sandbox.parent.parent)
    assert_one_line_error(o, os.strerror(code))
    assert_no_leftovers(o, allowed=(sandbox / "cache",))
    assert not (sandbox / "out").exists() or not any((sandbox / "out").iterdir())


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_pretrain_checkpoint_fault(sandbox, monkeypatch, code):
    render_clevr_mini(sandbox / "run" / "clevr_mini", 8, 32, size=32, progress=False, workers=1)
    fail_writes_under(monkeypatch, sandbox / "run", code, name="latest.pth.tar")
    argv = ["pretrain", "--out", sandbox / "run", "--no-progress", "--steps", "1", "clevr_mini_images=8",
            "clevr_mini_size=32", "batch_size=4", "crop_size=32", "patch_size=8", "depth=2",
            "pred_depth=1", "num_workers=0"]
    o = run_cli(argv, sandbox.parent.parent)
    assert_one_line_error(o, os.strerror(code))
    assert_no_leftovers(o, allowed=(sandbox / "run",))
    assert not (sandbox / "run" / "latest.pth.tar").exists()


def test_pretrain_checkpoint_cut_off_mid_write(sandbox):
    """The kernel cuts the checkpoint's write short (file size limit: how a filling disk behaves), which torch's
    zip writer reports as RuntimeError('unexpected pos'): one line naming the file, nothing half-written."""
    render_clevr_mini(sandbox / "run" / "clevr_mini", 8, 32, size=32, progress=False, workers=1)
    argv = ["pretrain", "--out", sandbox / "run", "--no-progress", "--steps", "1", "clevr_mini_images=8",
            "clevr_mini_size=32", "batch_size=4", "crop_size=32", "patch_size=8", "depth=2",
            "pred_depth=1", "num_workers=0"]
    with file_size_limit(300_000):  # the logs and config stay below it; the checkpoint (~2 MB) does not
        o = run_cli(argv, sandbox.parent.parent)
    line = assert_one_line_error(o, "file too large")
    assert str(sandbox / "run" / "latest.pth.tar") in line
    assert_no_leftovers(o, allowed=(sandbox / "run",))
    assert not (sandbox / "run" / "latest.pth.tar").exists()


def test_export_to_a_folder_is_one_line(world, sandbox):
    (sandbox / "dir.npz").mkdir()
    o = run_cli(features_argv(world, sandbox, "--export", sandbox / "dir.npz"), sandbox.parent.parent)
    assert_one_line_error(o)
    assert_no_leftovers(o, allowed=(sandbox / "cache",))


def test_out_is_a_file(world, sandbox):
    (sandbox / "out").write_text("not a folder")
    run_cli(features_argv(world, sandbox), sandbox.parent.parent)
    o = run_cli(protocol_argv(world, sandbox, ["transfer", "--dataset", "cifar100"]), sandbox.parent.parent)
    assert_one_line_error(o)
    assert_no_leftovers(o, allowed=(sandbox / "cache",))


def test_cache_dir_is_a_file(world, sandbox):
    (sandbox / "cache").write_text("not a folder")
    o = run_cli(features_argv(world, sandbox), sandbox.parent.parent)
    assert_one_line_error(o)
    assert_no_leftovers(o)


# real processes: a closed stdout, two extractions of one entry ------------------------------------------


def cli_process(args: list[Any], **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "ijepa_eval.cli", *map(str, args)], env=env, **kwargs)


def test_closed_stdout_is_one_line(world, tmp_path):
    proc = cli_process(["inspect", world["ckpt"]], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # `| head -0`: the reader is gone before the first line
    err = proc.stderr.read().decode()
    proc.wait(timeout=60)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert proc.returncode != 0 and len(lines) == 1 and lines[0].startswith("ijepa-eval inspect"), err
    assert "Traceback" not in err and "Exception ignored" not in err


def test_two_processes_extract_one_entry_once(world, tmp_path):
    cache = tmp_path / "cache"
    argv = ["features", *ckpt_args(world), "--dataset", "cifar100", "--root", world["cifar"], "--split", "train",
            "--cache-dir", cache, "--quiet", "--batch-size", "8"]
    procs = [cli_process([*argv, "--export", tmp_path / f"{i}.npz"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for i in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    stdout = [o[0].decode() for o in outs]
    assert sum("extracted in" in s for s in stdout) == 1 and sum("cache hit" in s for s in stdout) == 1, stdout
    a, b = np.load(tmp_path / "0.npz"), np.load(tmp_path / "1.npz")
    np.testing.assert_array_equal(a["features"], b["features"])
    (entry,) = list(cache.iterdir())
    assert not [p for p in entry.iterdir() if p.name.endswith(".tmp") or p.name.startswith(".")]


@pytest.mark.parametrize("text", [*EVIL_NAMES.values(), "hf:/data/set", "C:\\evil", "ünïcode/名前", ".hidden", ""])
def test_safe_component_is_one_harmless_component(tmp_path, text):
    name = safe_component(text)
    assert name and name not in (".", "..") and not name.startswith(".") and len(name) <= 120
    assert Path(name).name == name and "\x00" not in name and "\n" not in name
    assert inside(tmp_path, name).parent == tmp_path
    with pytest.raises(IjepaEvalError):
        inside(tmp_path, "../x")
    assert safe_component("y" * 300) != safe_component("y" * 301)  # shortened names keep a hash of the whole
