"""The attentive protocol end to end on tiny data in real layouts: CLI, selection order, exact resume, torchrun,
cached tokens and their size check, the result JSON, the V-JEPA-layout probe file."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ijepa_eval.cli import main
from ijepa_eval.data import get_dataset, vjepa_transform
from ijepa_eval.data.clevr_mini import render_clevr_mini
from ijepa_eval.data.synthetic import write_cifar100, write_imagenet
from ijepa_eval.encoders import load_encoder
from ijepa_eval.errors import CheckpointError, ConfigError
from ijepa_eval.io import sha256_file
from ijepa_eval.probes.attentive import load_vjepa_probes, read_probe_file
from ijepa_eval.protocols import attentive as run_module
from ijepa_eval.protocols import attentive_train as train_module
from ijepa_eval.protocols.attentive import run_attentive
from ijepa_eval.results import load_predictions, load_result

sys.path.insert(0, str(Path(__file__).parent))
from fixtures_checkpoints import write_ijepa_checkpoint  # noqa: E402

FAST = ["epochs=2", "batch_size=8", "attentive.base_batch=8"]
GRID = ["attentive.lrs=[0.001,0.003]", "attentive.wds=[0.001]"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("attentive")
    write_ijepa_checkpoint(d / "tiny.pth.tar", depth=4, img_size=32)
    return {"ckpt": d / "tiny.pth.tar",
            "clevr": render_clevr_mini(d / "clevr", n_train=40, n_val=12, size=48, progress=False, workers=1),
            "cifar100": write_cifar100(d / "cifar100", n_train=40, n_test=12),
            "folder": write_imagenet(d / "folder", n_classes=4, n_train_per_class=8, n_val_per_class=3,
                                     split_file_per_class=6)}


def attentive(world, tmp_path, recipe, root, *overrides, **kwargs):
    opts = dict(root=world[root], out_dir=tmp_path / "out", cache_dir=tmp_path / "cache", device="cpu",
                num_workers=0, progress=False)
    return run_attentive(recipe, world["ckpt"], overrides=[*FAST, *overrides], **{**opts, **kwargs})


@pytest.mark.parametrize("recipe,root,extra", [
    ("clevr_count_attentive", "clevr", []),
    ("cifar100_attentive", "cifar100", []),
    ("in1k_attentive", "folder", ["dataset.name=folder"]),
])
def test_cli_runs_on_clevr_mini_cifar_and_image_folders(world, tmp_path, capsys, recipe, root, extra):
    args = ["attentive", "--recipe", recipe, "--ckpt", str(world["ckpt"]), "--root", str(world[root]), "--device",
            "cpu", "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path), "--quiet", "--workers", "0",
            "--label", "tiny", *FAST, *extra]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "no selection (one probe, last epoch): attentive/lr0.001/wd0.001 -> top1" in out
    (path,) = tmp_path.glob("*.json")
    r = load_result(path)
    assert (r.schema_version, r.adaptation, r.probe, r.selection["split"]) == (2, "frozen", "attentive", "none")
    assert r.protocol["reference"].startswith(("V-JEPA", "V-JEPA's")) and r.protocol["deviations"]
    assert set(r.metrics_ci) == {"top1", "top5", "mean_per_class_acc"} and r.seeds is None
    assert set(r.ci["method"]) == set(r.metrics_ci) and r.features["decode"] == "pil"  # intervals as every result's
    assert r.dataset["sizes"]["fit"] == r.dataset["sizes"][r.dataset["train_split"]]  # one probe: all of train
    assert r.optimizer["base_lr"] == [0.001] and r.optimizer["effective_lr"] == [0.001]
    assert r.features["mode"] == "online" and r.features["pool"] == "tokens"
    assert "gpu_hours" in r.timings and len(r.timings["epochs"]) == 2
    pred = load_predictions(r, path)
    assert pred is not None and 100 * np.mean(pred.top5[:, 0] == pred.labels) == pytest.approx(r.metrics["top1"])


def test_reported_split_is_opened_only_after_training_and_selection(world, tmp_path, monkeypatch):
    events = []
    real_get, real_save = run_module.get_dataset, train_module.save_checkpoint
    monkeypatch.setattr(run_module, "get_dataset", lambda name, root, split, **kw: (
        events.append(("open", split)), real_get(name, root, split, **kw))[1])
    monkeypatch.setattr(train_module, "save_checkpoint", lambda work, grid, state, ident: (
        events.append(("epoch", state.epoch)), real_save(work, grid, state, ident))[1])
    r = load_result(attentive(world, tmp_path, "cifar100_attentive", "cifar100", *GRID))
    assert events == [("open", "train"), ("epoch", 1), ("epoch", 2), ("open", "train"), ("open", "test")]
    assert r.selection["split"] == "train_holdout" and r.selection["metric"] == "top1"
    assert r.dataset["sizes"] == {"train": 40, "fit": 32, "holdout": 8, "test": 12}  # one per class with 2+
    best = max(range(2), key=lambda i: (r.heads[i]["scores"]["train_holdout"]["top1"], -i))
    assert r.selection["head"] == r.heads[best]["name"] and r.heads[best]["scores"]["test"] == r.metrics
    assert "test" not in r.heads[1 - best]["scores"]  # only the chosen probe is read on the test split
    # V-JEPA 2's convention on request: chosen on the reported split, recorded as such
    r = load_result(attentive(world, tmp_path / "t", "cifar100_attentive", "cifar100", *GRID, "selection.split=test"))
    assert r.selection["split"] == "test" and r.dataset["sizes"]["fit"] == 40
    # CLEVR selects on VTAB val, never a split its training data contains
    r = load_result(attentive(world, tmp_path / "c", "clevr_count_attentive", "clevr", *GRID))
    assert r.selection["split"] == "val" and "val" in r.heads[0]["scores"]
    with pytest.raises(ConfigError, match="which its training split 'trainval' contains"):
        attentive(world, tmp_path / "tv", "clevr_count_attentive", "clevr", *GRID, "dataset.train_split=trainval")


def test_resume_after_a_kill_continues_bit_exactly(world, tmp_path, monkeypatch):
    args = ("cifar100_attentive", "cifar100", "epochs=3", *GRID)
    straight = attentive(world, tmp_path / "a", *args)
    real_save = train_module.save_checkpoint

    def killed_after_epoch_2(work, grid, state, ident):
        real_save(work, grid, state, ident)
        if state.epoch == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "save_checkpoint", killed_after_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        attentive(world, tmp_path / "b", *args)
    monkeypatch.setattr(train_module, "save_checkpoint", real_save)
    with pytest.raises(ConfigError, match="pass --resume to continue it .* or --restart"):
        attentive(world, tmp_path / "b", *args)
    with pytest.raises(CheckpointError, match="written for another config"):
        attentive(world, tmp_path / "b", *args, "attentive.wds=[0.002]", resume=True)
    resumed = attentive(world, tmp_path / "b", *args, resume=True)
    a, b = load_result(straight), load_result(resumed)
    assert [h["scores"] for h in a.heads] == [h["scores"] for h in b.heads] and a.metrics == b.metrics
    (wa,), (wb,) = (list((tmp_path / d / "cache" / "attentive").rglob("latest.pth")) for d in ("a", "b"))
    ga, gb = (torch.load(w, weights_only=True)["grid"] for w in (wa, wb))
    assert ga["step"] == gb["step"] == 3 * 4  # 32 fit rows / batch 8: 4 batches per epoch
    assert all(torch.equal(pa[k], pb[k]) for pa, pb in zip(ga["probes"], gb["probes"], strict=True) for k in pa)
    assert ga["optimizers"][0]["state"][0]["exp_avg"].abs().sum() > 0


@pytest.mark.slow  # ~25 s on 2 shared cores: two torchrun processes start torch
def test_torchrun_two_processes_match_one(world, tmp_path):
    """Two gloo ranks of batch 4 see the single process's batches of 8: same losses, same test predictions."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    one = attentive(world, tmp_path / "one", "cifar100_attentive", "cifar100", *GRID)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
           "ijepa_eval.cli", "attentive", "--recipe", "cifar100_attentive", "--ckpt", str(world["ckpt"]), "--root",
           str(world["cifar100"]), "--device", "cpu", "--quiet", "--workers", "0", "--cache-dir",
           str(tmp_path / "two" / "cache"), "--out", str(tmp_path / "two"), *FAST, *GRID]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    a, (b_path,) = load_result(one), list((tmp_path / "two").glob("*.json"))
    b = load_result(b_path)
    assert b.timings["device_count"] == 2 and a.dataset["sizes"] == b.dataset["sizes"]
    for ha, hb in zip(a.heads, b.heads, strict=True):
        assert hb["scores"]["train"]["loss"] == pytest.approx(ha["scores"]["train"]["loss"], rel=1e-4)
    np.testing.assert_array_equal(load_predictions(b, b_path).top5, load_predictions(a, one).top5)


def test_cached_tokens_are_a_labelled_protocol_with_a_size_check(world, tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"above --max-cache-gb 1e-06; raise --max-cache-gb or train online"):
        attentive(world, tmp_path, "clevr_count_attentive", "clevr", "attentive.tokens=cached", max_cache_gb=1e-6)
    assert "cached patch tokens need" in capsys.readouterr().out
    assert not (tmp_path / "cache").exists()  # refused before anything was extracted
    cli = ["attentive", "--recipe", "clevr_count_attentive", "--tokens", "cached", "--max-cache-gb", "0.000001",
           "--ckpt", str(world["ckpt"]), "--root", str(world["clevr"]), "--device", "cpu", "--cache-dir",
           str(tmp_path / "cache"), "--out", str(tmp_path), "--quiet"]
    assert main(cli) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "above --max-cache-gb 1e-06" in err[0] and "Traceback" not in err[0]
    path = attentive(world, tmp_path, "clevr_count_attentive", "clevr", "attentive.tokens=cached", *GRID)
    assert path.name.endswith("__clevr_count_attentive_cached.json")
    r = load_result(path)
    assert r.protocol["task"] == "clevr_count_attentive_cached" and r.features["mode"] == "cached tokens"
    assert r.features["transform"]["train"] is None and r.selection["split"] == "val"
    again = attentive(world, tmp_path, "clevr_count_attentive", "clevr", "attentive.tokens=cached", *GRID,
                      skip_existing=False)
    assert load_result(again).metrics == r.metrics  # tokens from the cache: the same numbers
    with pytest.raises(ConfigError, match="'linear' probe; run it with `ijepa-eval run`"):
        run_attentive("cifar100", world["ckpt"], root=world["cifar100"], device="cpu")
    run = ["run", "cifar100_attentive", "--ckpt", str(world["ckpt"]), "--root", str(world["cifar100"]), "--device",
           "cpu", "--out", str(tmp_path), "--quiet", "--seeds", "3"]
    assert main(run) == 2 and "trains attentive probes, which has no cheap head" in capsys.readouterr().err


def test_the_chosen_probe_is_written_in_vjepas_layout(world, tmp_path, capsys):
    path = attentive(world, tmp_path, "cifar100_attentive", "cifar100")
    r = load_result(path)
    probe_file = path.with_name(path.name.removesuffix(".json") + ".vjepa_probe.pth")  # beside the JSON
    assert r.probe_file == {"file": probe_file.name, "sha256": sha256_file(probe_file), "format": "vjepa-checkpoint-pth"}
    assert r.head_file is None  # head_file is a linear/logreg head on pooled features (what `shift` applies)
    assert main(["shift", "--result", str(path), "--sets", "real"]) == 2  # so shift refuses it, in one line
    (err,) = capsys.readouterr().err.strip().splitlines()
    assert "keeps no head (probe attentive" in err
    blob = read_probe_file(probe_file, r.probe_file["sha256"])
    assert set(blob) == {"classifier", "opt", "scaler", "epoch", "batch_size", "world_size", "lr"}
    assert all(k.startswith("module.pooler.") or k.startswith("module.linear.") for k in blob["classifier"])
    (probe,) = load_vjepa_probes(blob, num_heads=load_encoder(world["ckpt"]).num_heads)
    encoder = load_encoder(world["ckpt"])
    test = get_dataset("cifar100", world["cifar100"], "test", transform=vjepa_transform(32))
    images = torch.stack([test[i][0] for i in range(len(test))])
    with torch.no_grad():
        top5 = probe(encoder.forward_tokens(images)).topk(5).indices
    np.testing.assert_array_equal(top5.numpy(), load_predictions(load_result(path), path).top5)
    # a changed probe file is refused, and the result is not reused: the finished run is evaluated again
    torch.save({**blob, "epoch": 99}, probe_file)
    with pytest.raises(CheckpointError, match="does not match the sha256 its result records"):
        read_probe_file(probe_file, r.probe_file["sha256"])
    capsys.readouterr()
    again = attentive(world, tmp_path, "cifar100_attentive", "cifar100", resume=True)
    assert "skip:" not in capsys.readouterr().out and load_result(again).probe_file == r.probe_file


def test_cached_tokens_take_any_decode_backend_and_online_runs_refuse_them(world, tmp_path, capsys):
    path = attentive(world, tmp_path, "clevr_count_attentive", "clevr", "attentive.tokens=cached", "decode=tensor")
    assert load_result(path).features["decode"] == "tensor"
    metas = [json.loads(m.read_text()) for m in (tmp_path / "cache").rglob("meta.json")]
    assert len(metas) == 2 and {m["key_fields"]["decode"] for m in metas} == {"tensor"}  # train, test (one probe)
    assert {tuple(m["key_fields"]["pools"]) for m in metas} == {("tokens",)}
    cli = ["attentive", "--recipe", "cifar100_attentive", "--decode", "tensor", "--ckpt", str(world["ckpt"]),
           "--root", str(world["cifar100"]), "--device", "cpu", "--out", str(tmp_path), "--quiet"]
    assert main(cli) == 2
    (err,) = capsys.readouterr().err.strip().splitlines()
    assert "online attentive probes augment PIL images every step" in err and "attentive.tokens=cached" in err


def paper_run(runs: Path, protocol: str, correct: np.ndarray, labels: np.ndarray, config: dict) -> Path:
    """A result JSON on ImageNet-1k's real sizes whose top-1 is right exactly where ``correct`` says."""
    from ijepa_eval.protocols.run_record import write_with_predictions
    from ijepa_eval.results import ResultRecord

    top5 = np.stack([np.where(correct, labels, (labels + 1) % 1000)] + [(labels + k) % 1000 for k in range(2, 6)], 1)
    record = ResultRecord(
        protocol={"name": protocol, "task": protocol, "version": 1, "config": config},
        model={"source": "/ckpts/IN1K-vit.h.14-300e.pth.tar", "sha256": "ab" * 32, "format": "ijepa",
               "branch": "target", "arch": {}, "label": "ijepa-h14",
               "meta": {"method": "I-JEPA", "arch_name": "ViT-H/14", "epochs": 300, "data": "IN-1k"}},
        features={}, metrics={"top1": 100 * correct.mean()}, probe=config.get("probe"),
        dataset={"name": "imagenet", "train_split": "train", "test_split": "val", "num_classes": 1000,
                 "fingerprint": {"val": "f" * 16}, "sizes": {"train": 1_281_167, "val": 50_000}},
        selection={"split": "none", "head": "h"}, heads=[{"name": "h", "scores": {}}])
    return write_with_predictions(record, runs, labels, top5, np.arange(len(labels)))


def test_attentive_table_places_ours_beside_the_published_numbers_and_our_linear_probe(tmp_path, capsys):
    import pandas as pd
    from statsmodels.stats.contingency_tables import mcnemar
    from test_stats import brute_force_tango

    g = np.random.default_rng(0)
    labels = g.integers(0, 1000, 50_000)
    linear = g.random(50_000) < 0.78
    attentive = linear.copy()
    flip = g.choice(np.flatnonzero(~linear), 600, replace=False)  # 600 wins, 100 losses against the linear probe
    attentive[flip] = True
    attentive[g.choice(np.flatnonzero(linear), 100, replace=False)] = False
    runs = tmp_path / "runs"
    linear_ci = load_result(paper_run(runs, "in1k_linear", linear, labels, {"probe": "linear"})).metrics_ci["top1"]
    ours_ci = load_result(paper_run(runs, "in1k_attentive", attentive, labels,
                                    {"probe": "attentive", "attentive": {"linear_pair": "in1k_linear"}})).metrics_ci["top1"]
    assert main(["table", str(runs), "--out", str(tmp_path / "tables"), "--format", "md,csv"]) == 0
    csv = pd.read_csv(tmp_path / "tables" / "attentive.csv", dtype=str, keep_default_na=False)
    row = csv[(csv["Protocol"] == "in1k_attentive") & (csv["Paper probe"] == "ep_q32")].iloc[0]
    ours, ours_linear = 100 * attentive.mean(), 100 * linear.mean()
    assert (row["Paper selected on"], row["Paper"], row["Paper linear"]) == ("test", "79.0", "78.1")  # EP's best epoch
    assert (row["Ours"], row["Ours lo"], row["Ours hi"]) == (f"{ours:.2f}", f"{ours_ci[0]:.2f}", f"{ours_ci[1]:.2f}")
    inside = ours_ci[0] <= 79.0 <= ours_ci[1]  # Δ's range check: the paper's value against our interval
    assert (row["Δ"], row["Δ marks"]) == (f"{ours - 79.0:+.2f}", "∈" if inside else "∉")
    assert (row["Ours linear"], row["Ours linear lo"]) == (f"{ours_linear:.2f}", f"{linear_ci[0]:.2f}")
    lo, hi = brute_force_tango(600, 100, 50_000)  # the paired difference's interval: Tango's, from first principles
    assert row["Ours − linear"] == f"{ours - ours_linear:+.2f}" and row["Ours − linear marks"] == "↑"
    assert float(row["Ours − linear lo"]) == pytest.approx(100 * lo, abs=0.006)
    assert float(row["Ours − linear hi"]) == pytest.approx(100 * hi, abs=0.006)
    md = (tmp_path / "tables" / "README.md").read_text()
    assert "## Attentive probes" in md and "`ep_q32` = Efficient Probing's EP, a different probe" in md
    assert " ± " not in md and "McNemar's score test with Tango's interval" in md
    # compare pairs the attentive result with the same checkpoint's linear one, in the comparison's family
    p = mcnemar([[0, 600], [100, 0]], exact=False, correction=False).pvalue
    assert main(["compare", "--results", str(runs)]) == 0
    out = capsys.readouterr().out
    assert (f"in1k_attentive: ijepa-h14 (target), attentive − linear (in1k_linear) = {ours - ours_linear:+.1f} top1 "
            f"points [{100 * lo:+.1f}, {100 * hi:+.1f}] (McNemar score test, Tango interval): significantly better "
            f"(p = {p:.3g}, unadjusted)") in out
    assert main(["compare", "--results", str(runs), "--adjust", "holm"]) == 0
    assert f"Holm-adjusted p = {min(1.0, p):.3g} over 1 tests" in capsys.readouterr().out  # its only test


def test_linear_pairs_name_recipes_on_the_same_data():
    from ijepa_eval.protocols.recipes import available_recipes, load_recipe

    attentive = [load_recipe(n) for n in available_recipes() if load_recipe(n).probe == "attentive"]
    assert len(attentive) == 8
    for recipe in attentive:
        pair = load_recipe(recipe.attentive.linear_pair)
        assert pair.probe == "linear" and pair.dataset.name == recipe.dataset.name, recipe.name
