"""Recipes, the runner's selection order, and every protocol end to end through the CLI on tiny data."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ijepa_eval.cli import main
from ijepa_eval.data.clevr_mini import render_clevr_mini
from ijepa_eval.data.synthetic import write_cifar100, write_imagenet, write_inat18, write_places205
from ijepa_eval.errors import ConfigError
from ijepa_eval.io import sha256_file
from ijepa_eval.protocols import RECIPES_DIR, available_recipes, load_recipe, run_protocol
from ijepa_eval.protocols import runner as runner_module
from ijepa_eval.results import METRIC_DIRECTIONS, load_result
from ijepa_eval.stats import metric_intervals

sys.path.insert(0, str(Path(__file__).parent))
from fixtures_checkpoints import write_ijepa_checkpoint  # noqa: E402

FAST = ["epochs=2", "batch_size=16", "logreg.max_iter=30"]
ATTENTIVE = [f"{name}_attentive" for name in ("in1k", "in1k_1pct", "cifar100", "places205", "inat18", "clevr_count",
                                               "clevr_dist")] + ["in1k_attentive_vjepa2"]
ALL_PROTOCOLS = ["in1k_linear", "in1k_1pct_linear", "in1k_1pct_logreg", "cifar100", "places205", "inat18",
                 "clevr_count", "clevr_dist", "knn", "folder_linear"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """One tiny I-JEPA checkpoint and every dataset in its native layout, shared by the module."""
    d = tmp_path_factory.mktemp("world")
    write_ijepa_checkpoint(d / "tiny.pth.tar", depth=4, img_size=32)
    roots = {
        "imagenet": write_imagenet(d / "imagenet", n_classes=4, n_train_per_class=10, n_val_per_class=3,
                                   split_file_per_class=5),
        "cifar100": write_cifar100(d / "cifar100", n_train=60, n_test=20),
        "places205": write_places205(d / "places205", n_classes=4, n_train=24, n_val=8),
        "inat18": write_inat18(d / "inat18", n_classes=5, n_train=25, n_val=10),
        "clevr": render_clevr_mini(d / "clevr", n_train=30, n_val=10, size=48, progress=False, workers=1),
    }
    return {"dir": d, "ckpt": d / "tiny.pth.tar", "roots": roots, "cache": d / "cache"}


def cli_args(world, verb_args, root_key, out, *extra):
    return [*verb_args, "--ckpt", str(world["ckpt"]), "--root", str(world["roots"][root_key]), "--cache-dir",
            str(world["cache"]), "--out", str(out), "--device", "cpu", "--quiet", "--workers", "0", *extra, *FAST]


VERB_OF = {
    "in1k_linear": (["linear"], "imagenet"),
    "in1k_1pct_linear": (["lowshot", "--method", "linear"], "imagenet"),
    "in1k_1pct_logreg": (["lowshot", "--method", "logreg"], "imagenet"),
    "cifar100": (["transfer", "--dataset", "cifar100"], "cifar100"),
    "places205": (["transfer", "--dataset", "places205"], "places205"),
    "inat18": (["transfer", "--dataset", "inat18"], "inat18"),
    "clevr_count": (["clevr", "--task", "count"], "clevr"),
    "clevr_dist": (["clevr", "--task", "dist"], "clevr"),
    "knn": (["knn", "--dataset", "cifar100"], "cifar100"),
    "folder_linear": (["run", "folder_linear"], "imagenet"),  # ImageNet's train/val class folders
}


# --------------------------------------------------------------------------------------------- recipes


def test_every_recipe_loads_with_versions_and_metric_directions():
    # fine-tuning and attentive probes run in test_finetune.py and test_attentive.py
    assert available_recipes() == sorted([*ALL_PROTOCOLS, "in1k_1pct_finetune", "in1k_1pct_finetune_semivit",
                                          *ATTENTIVE])
    for name in [*ALL_PROTOCOLS, *ATTENTIVE]:
        r = load_recipe(name)
        assert r.name == name and r.version >= 1 and r.reference and r.description
        assert set(r.metrics) == {"top1", "top5", "mean_per_class_acc"}
        assert all(m.higher_is_better == METRIC_DIRECTIONS[k] for k, m in r.metrics.items())
    in1k = load_recipe("in1k_linear")
    assert (in1k.optimizer.name, in1k.batch_size, in1k.epochs, in1k.schedule.milestones) == ("lars", 16384, 50, [15, 30, 45])
    assert len(in1k.grid.heads) * len(in1k.grid.lr_mults) * len(in1k.grid.wds) * len(in1k.representations) == 16
    clevr = load_recipe("clevr_dist")
    assert (clevr.schedule.name, clevr.epochs, clevr.dataset.val_split) == ("cosine", 100, "val")


def test_overrides_are_typed_and_checked(tmp_path):
    r = load_recipe("cifar100", ["epochs=3", "optimizer.base_lr=1", "grid.wds=0", "knn.shots=5"])
    assert r.epochs == 3 and r.optimizer.base_lr == 1.0 and isinstance(r.optimizer.base_lr, float)
    assert r.grid.wds == [0.0] and r.knn.shots == 5
    # YAML 1.1 reads `1e-3` (an exponent without a dot) as a string; float fields take it as the number
    r = load_recipe("cifar100", ["optimizer.base_lr=1e-3", "grid.wds=[5E-4, 0]"])
    assert r.optimizer.base_lr == 1e-3 and r.grid.wds == [5e-4, 0.0]
    with pytest.raises(ConfigError, match="'optimizer.base_lr' expects float, got '1e-3x'"):
        load_recipe("cifar100", ["optimizer.base_lr=1e-3x"])
    with pytest.raises(ConfigError, match="unknown override key 'epoch'. Did you mean 'epochs'"):
        load_recipe("cifar100", ["epoch=3"])
    with pytest.raises(ConfigError, match="'optimizer.base_lrr'.*Did you mean 'optimizer.base_lr'"):
        load_recipe("cifar100", ["optimizer.base_lrr=0.1"])
    with pytest.raises(ConfigError, match="'epochs' expects int, got 'abc'"):
        load_recipe("cifar100", ["epochs=abc"])
    with pytest.raises(ConfigError, match="expects int, got True"):
        load_recipe("cifar100", ["epochs=true"])
    with pytest.raises(ConfigError, match="unknown value for 'optimizer.name' 'adam'"):
        load_recipe("cifar100", ["optimizer.name=adam"])
    with pytest.raises(ConfigError, match="not key=value"):
        load_recipe("cifar100", ["epochs"])
    with pytest.raises(ConfigError, match="'epochs.x': 'epochs' is not a section"):
        load_recipe("cifar100", ["epochs.x=1"])
    with pytest.raises(ConfigError, match="unknown protocol 'cifar10'. Did you mean 'cifar100'"):
        load_recipe("cifar10")
    # these used to end in a KeyError / faiss AssertionError after the whole training run
    with pytest.raises(ConfigError, match="unknown value for 'selection.metric' 'top7'.*Available: mean_per_class_acc, top1, top5"):
        load_recipe("cifar100", ["selection.metric=top7"])
    with pytest.raises(ConfigError, match="knn.ks must be a list of neighbour counts >= 1"):
        load_recipe("knn", ["knn.ks=[0, 10]"])


def test_overrides_reach_free_form_dataset_options():
    r = load_recipe("in1k_1pct_linear", ["dataset.options.split_file=/data/1percent.txt",
                                         "dataset.options.allow_custom_split=true"])
    assert r.dataset.options == {"split_file": "/data/1percent.txt", "allow_custom_split": True}
    assert r.dataset.name == "imagenet_1pct" and load_recipe("in1k_1pct_linear").dataset.options == {}


def test_recipe_from_yaml_path_rejects_unknown_keys(tmp_path):
    text = (RECIPES_DIR / "cifar100.yaml").read_text()
    good = tmp_path / "mine.yaml"
    good.write_text(text.replace("name: cifar100", "name: mine"))
    assert load_recipe(str(good)).name == "mine"
    bad = tmp_path / "bad.yaml"
    bad.write_text(text + "epocs: 3\n")
    with pytest.raises(ConfigError, match="bad.yaml: unknown key 'epocs'"):
        load_recipe(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_recipe(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: mine\nepochs: [1\n")
    with pytest.raises(ConfigError, match=r"broken.yaml is not valid YAML \(.* at line 3, column 1\)") as info:
        load_recipe(broken)
    assert "\n" not in str(info.value), "the CLI prints errors as one line"


def test_cli_bad_override_is_one_line_error(world, tmp_path, capsys):
    code = main(cli_args(world, ["transfer", "--dataset", "cifar100"], "cifar100", tmp_path, "epoch=2"))
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "Did you mean 'epochs'" in err
    assert not list(tmp_path.glob("*.json"))


def test_aug_paper_conflicts_fail_before_any_extraction(world, tmp_path, monkeypatch, capsys):
    """CLEVR's default retrains on train+val, which the augmented loop cannot do: say so at once, not
    after a full augmented training run."""
    with pytest.raises(ConfigError, match="add selection.retrain_on_full_train=false"):
        load_recipe("clevr_count", ["aug=paper"])
    assert load_recipe("clevr_count", ["aug=paper", "selection.retrain_on_full_train=false"]).aug == "paper"
    assert load_recipe("clevr_count", ["aug=paper", "selection.split=test"]).aug == "paper"
    with pytest.raises(ConfigError, match="aug=paper applies to linear probes only"):
        load_recipe("knn", ["aug=paper"])
    events = instrument(monkeypatch)
    code = main(cli_args(world, ["clevr", "--task", "count"], "clevr", tmp_path, "--aug", "paper"))
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "retrain_on_full_train=false" in err
    assert events == [] and not list(tmp_path.glob("*.json"))


# ---------------------------------------------------------------------------------- selection honesty


def instrument(monkeypatch):
    """Log every feature request (by split) and the moment a head is selected."""
    events = []
    real_features, real_select = runner_module.get_features, runner_module.select_head

    def get_features(encoder, dataset, **kw):
        events.append(("features", dataset.split))
        return real_features(encoder, dataset, **kw)

    def select_head(*a, **kw):
        events.append(("select", None))
        return real_select(*a, **kw)

    monkeypatch.setattr(runner_module, "get_features", get_features)
    monkeypatch.setattr(runner_module, "select_head", select_head)
    return events


@pytest.mark.parametrize("protocol, root_key, test_split, selection_split", [
    ("cifar100", "cifar100", "test", "train_holdout"),
    ("clevr_count", "clevr", "test", "val"),
])
def test_default_selection_never_reads_the_reported_split_first(world, tmp_path, monkeypatch, protocol, root_key,
                                                                test_split, selection_split):
    events = instrument(monkeypatch)
    path = run_protocol(protocol, world["ckpt"], root=world["roots"][root_key], out_dir=tmp_path,
                        cache_dir=world["cache"], overrides=FAST, device="cpu", progress=False, num_workers=0)
    assert events.index(("select", None)) < events.index(("features", test_split))
    assert events[-1] == ("features", test_split)
    result = load_result(path)
    assert result.selection["split"] == selection_split
    assert all(selection_split in h["scores"] and "test" in h["scores"] for h in result.heads)


@pytest.mark.parametrize("protocol, root_key, retrain, fitted_on", [
    ("cifar100", "cifar100", True, ["train minus holdout", "train"]),
    ("cifar100", "cifar100", False, ["train minus holdout"]),
    ("clevr_count", "clevr", True, ["train", "train+val"]),
    ("clevr_count", "clevr", False, ["train"]),
])
def test_retraining_follows_the_recipe(world, tmp_path, monkeypatch, protocol, root_key, retrain, fitted_on):
    from ijepa_eval.protocols.probing import LinearProbe

    sizes = []
    real_fit = LinearProbe.fit

    def fit(self, feats, labels, rows):
        sizes.append(len(rows))
        return real_fit(self, feats, labels, rows)

    monkeypatch.setattr(LinearProbe, "fit", fit)
    path = run_protocol(protocol, world["ckpt"], root=world["roots"][root_key], out_dir=tmp_path,
                        cache_dir=world["cache"], overrides=[*FAST, f"selection.retrain_on_full_train={retrain}"],
                        device="cpu", progress=False, num_workers=0)
    r = load_result(path)
    train, val = r.dataset["sizes"]["train"], r.dataset["sizes"].get("val", 0)
    expected = {"train": train, "train+val": train + val}
    assert len(sizes) == len(fitted_on) and sizes[1:] == [expected[name] for name in fitted_on[1:]]
    if fitted_on[0] == "train minus holdout":  # 10% of every class, at least one row (tiny classes here)
        assert 0.5 * train <= sizes[0] < train
    else:
        assert sizes[0] == train
    assert r.selection["retrained_on_full_train"] is retrain


def test_select_on_test_is_the_paper_convention_and_recorded(world, tmp_path, monkeypatch):
    events = instrument(monkeypatch)
    main(cli_args(world, ["transfer", "--dataset", "cifar100"], "cifar100", tmp_path, "--select-on", "test"))
    assert events.index(("features", "test")) < events.index(("select", None))
    result = load_result(next(tmp_path.glob("*.json")))
    assert result.selection["split"] == "test" and result.protocol["config"]["selection"]["split"] == "test"
    best = max(h["scores"]["test"]["top1"] for h in result.heads)
    assert result.metrics["top1"] == best


# ------------------------------------------------------------------------------------- end to end (CLI)


@pytest.mark.parametrize("protocol", ALL_PROTOCOLS)
def test_protocol_runs_end_to_end_through_the_cli(world, tmp_path, protocol, capsys):
    verb_args, root_key = VERB_OF[protocol]
    extra = ["dataset.options={allow_custom_split: true}"] if protocol.startswith("in1k_1pct") else []
    assert main(cli_args(world, verb_args, root_key, tmp_path, "--label", "tiny", *extra)) == 0
    out = capsys.readouterr().out
    (path,) = tmp_path.glob("*.json")
    assert f"result: {path}" in out and "selected on" in out
    r = load_result(path)
    assert r.protocol["name"] == protocol and r.protocol["version"] == load_recipe(protocol).version
    assert r.model["sha256"] == sha256_file(world["ckpt"]) and r.model["branch"] == "target"
    assert r.model["label"] == "tiny" and r.model["format"]
    assert set(r.metrics) == {"top1", "top5", "mean_per_class_acc"} and all(0 <= v <= 100 for v in r.metrics.values())
    assert set(k for h in r.heads for s in h["scores"].values() for k in s) <= set(METRIC_DIRECTIONS)
    selected = next(h for h in r.heads if h["name"] == r.selection["head"])
    assert selected["scores"]["test"] == r.metrics
    assert r.features["mode"] == "cached" and r.features["representations"] == ["lastPOOL", "concatPOOL4"]
    assert r.dataset["sizes"][r.dataset["test_split"]] > 0 and r.dataset["fingerprint"]
    assert r.env["torch"] and r.timings["total_s"] > 0
    # a CPU run: device recorded, no GPU-hours (wall-clock on a CPU is not GPU time)
    assert (r.timings["device"], r.timings["device_count"], r.timings["gpu_hours"]) == ("cpu", 1, None)
    check_predictions_and_intervals(path, r)
    if protocol.startswith("in1k_1pct"):  # the split file's provenance travels with the result
        info = r.dataset["split_info"]
        assert info["official"] is False and len(info["split_sha256"]) == 64 and info["split_file"]
    else:
        assert "split_info" not in r.dataset
    expected_heads = {"knn": 8, "in1k_1pct_logreg": 10}.get(protocol, 16)
    assert len(r.heads) == expected_heads
    recipe = load_recipe(protocol)  # the reference and its declared deviations travel with the result
    assert r.protocol["reference"] == recipe.reference and r.protocol["deviations"] == recipe.deviations
    if recipe.probe == "linear":  # lr per 256 images and the lr it trained with at the run's batch size
        opt, batch = recipe.optimizer, r.protocol["config"]["batch_size"]  # FAST overrides the batch size
        assert r.optimizer == {"base_lr": opt.base_lr, "base_batch": opt.base_batch,
                               "effective_lr": pytest.approx(opt.base_lr * batch / opt.base_batch)}
        assert sorted({h["lr"] for h in r.heads}) == pytest.approx(
            sorted(r.optimizer["effective_lr"] * m for m in set(recipe.grid.lr_mults)))
    else:
        assert r.optimizer is None


def test_batch_size_override_rescales_the_recorded_lr(world, tmp_path):
    path = run_protocol("cifar100", world["ckpt"], root=world["roots"]["cifar100"], out_dir=tmp_path, progress=False,
                        overrides=["epochs=1", "batch_size=64", "grid.lr_mults=[1.0]", "grid.wds=[0.0]"],
                        cache_dir=tmp_path / "cache")
    r = load_result(path)
    assert r.optimizer == {"base_lr": 0.01, "base_batch": 256, "effective_lr": pytest.approx(0.0025)}
    assert [h["lr"] for h in r.heads] == pytest.approx([0.0025] * 4)  # {lastPOOL, concatPOOL4} x {bn_linear, linear}


def check_predictions_and_intervals(path, r):
    """The predictions file next to the JSON reproduces the reported metrics; every interval holds them."""
    import numpy as np

    assert r.predictions["file"] == path.name.replace(".json", ".predictions.npz")
    npz = path.parent / r.predictions["file"]
    assert r.predictions["sha256"] == sha256_file(npz) and r.predictions["format"] == "npz-v1"
    with np.load(npz) as z:
        labels, top5, indices = z["labels"], z["top5"], z["indices"]
    assert labels.dtype == np.int32 and top5.dtype == np.int16 and len(labels) == r.dataset["sizes"][r.dataset["test_split"]]
    assert top5.shape == (len(labels), min(5, r.dataset["num_classes"])) and (indices == np.arange(len(labels))).all()
    top1 = 100.0 * np.mean(top5[:, 0] == labels)
    top5_acc = 100.0 * np.mean((top5 == labels[:, None]).any(1))
    per_class = [np.mean(top5[labels == c, 0] == c) for c in np.unique(labels)]
    assert r.metrics["top1"] == pytest.approx(top1) and r.metrics["top5"] == pytest.approx(top5_acc)
    assert r.metrics["mean_per_class_acc"] == pytest.approx(100.0 * np.mean(per_class))
    assert set(r.metrics_ci) == set(r.metrics)
    assert (r.metrics_ci, r.ci) == metric_intervals(labels, top5, seed=r.seed)  # the method is recorded
    for metric, (lo, hi) in r.metrics_ci.items():
        assert lo <= r.metrics[metric] + 1e-9 and r.metrics[metric] <= hi + 1e-9 and 0 <= lo <= hi <= 100


def test_seeds_retrain_the_selected_head_and_record_mean_and_std(world, tmp_path, capsys):
    """--seeds 3: the selected head alone with seeds 0, 1, 2; the grid and selection are those of a plain run,
    and seed 0 (the recipe's) reproduces the reported numbers (a head alone = the same head in the grid)."""
    import statistics

    args = cli_args(world, ["transfer", "--dataset", "cifar100"], "cifar100", tmp_path)
    assert main(args) == 0
    plain = load_result(next(tmp_path.glob("*.json")))
    assert plain.seeds is None
    assert main([*args, "--seeds", "3"]) == 0  # the plain result lacks seeds: run again, not skipped
    assert "over 3 probe seeds: top1" in capsys.readouterr().out
    r = load_result(next(tmp_path.glob("*.json")))
    assert (r.selection, r.metrics) == (plain.selection, plain.metrics)
    assert (r.seeds["n"], r.seeds["seeds"], r.seeds["head"]) == (3, [0, 1, 2], r.selection["head"])
    one_example = 100.0 / r.dataset["sizes"]["test"]
    for metric in ("top1", "top5", "mean_per_class_acc"):
        s = r.seeds[metric]
        assert len(s["values"]) == 3 and s["values"][0] == pytest.approx(r.metrics[metric], abs=one_example)
        assert s["mean"] == pytest.approx(statistics.mean(s["values"]))
        assert s["std"] == pytest.approx(statistics.stdev(s["values"]))

    knn = cli_args(world, ["knn", "--dataset", "cifar100"], "cifar100", tmp_path / "knn", "--seeds", "2")
    assert main(knn) == 0
    r = load_result(next((tmp_path / "knn").glob("*.json")))
    assert r.seeds["top1"] == {"mean": r.metrics["top1"], "std": 0.0, "values": [r.metrics["top1"]] * 2}
    with pytest.raises(ConfigError, match="--seeds must be at least 2"):
        run_protocol("knn", world["ckpt"], root=world["roots"]["cifar100"], seeds=1)


def test_console_script_and_paper_augmentation_mode(world, tmp_path):
    exe = Path(sys.executable).with_name("ijepa-eval")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([str(exe), *cli_args(world, ["transfer", "--dataset", "cifar100"], "cifar100", tmp_path,
                                               "--aug", "paper", "grid.lr_mults=[1.0]")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    r = load_result(next(tmp_path.glob("*.json")))
    assert r.features["mode"] == "augmented" and r.protocol["config"]["aug"] == "paper"
    assert len(r.heads) == 8


def test_paper_augmentation_loads_images_with_spare_cores_by_default(world, tmp_path, monkeypatch):
    """No --workers means one loader worker per spare core (as for extraction), not decoding in the main
    process while the GPU waits."""
    from torch.utils.data import DataLoader

    from ijepa_eval.protocols import probing

    asked = []

    def spy_loader(*args, num_workers, persistent_workers, **kwargs):
        asked.append(num_workers)
        return DataLoader(*args, num_workers=0, **kwargs)  # the tiny test data loads in-process

    monkeypatch.setattr(probing, "default_workers", lambda world_size: 3)
    monkeypatch.setattr(probing, "DataLoader", spy_loader)
    run_protocol("cifar100", world["ckpt"], root=world["roots"]["cifar100"], out_dir=tmp_path,
                 cache_dir=world["cache"], overrides=[*FAST, "aug=paper", "grid.lr_mults=[1.0]"], device="cpu",
                 progress=False, num_workers=None)
    assert asked and set(asked) == {3}


def test_paper_augmentation_is_seeded_when_loading_in_process(world):
    """With num_workers=0 the random crops/flips come from the global generator: the recipe seed must fix them."""
    import numpy as np
    import torch

    from ijepa_eval.data import get_dataset, train_transform
    from ijepa_eval.encoders import load_encoder
    from ijepa_eval.protocols.probing import LinearProbe

    enc = load_encoder(str(world["ckpt"]))
    ds = get_dataset("cifar100", world["roots"]["cifar100"], "train", transform=train_transform("cifar100", enc.img_size))
    recipe = load_recipe("cifar100", ["epochs=2", "batch_size=16", "grid.lr_mults=[1.0]", "aug=paper"])

    def trained_weights(global_seed: int) -> torch.Tensor:
        torch.manual_seed(global_seed)
        probe = LinearProbe(recipe, ["lastPOOL"], 100, torch.device("cpu"), progress=False)
        probe.fit_augmented(enc, ds, np.arange(len(ds)), num_workers=0)
        return torch.cat([g.weight.flatten() for g in probe.grid.groups.values()])

    torch.testing.assert_close(trained_weights(1), trained_weights(2), rtol=0, atol=0)


def test_paper_augmentation_encodes_in_chunks_equal_to_one_shot(world):
    """A probe batch of 16 encoded as chunks of 5, 5, 5, 1 (extraction_batch_size 5) trains the same heads as
    one forward over all 16: same batches, order and augmentations; no forward ever sees more than 5 images."""
    import numpy as np
    import torch

    from ijepa_eval.data import get_dataset, train_transform
    from ijepa_eval.encoders import load_encoder
    from ijepa_eval.protocols.probing import LinearProbe

    enc = load_encoder(str(world["ckpt"]))
    ds = get_dataset("cifar100", world["roots"]["cifar100"], "train", transform=train_transform("cifar100", enc.img_size))
    seen = []
    forward = enc.forward_pooled
    enc.forward_pooled = lambda images, n: seen.append(len(images)) or forward(images, n)

    def trained(chunk: int) -> tuple[torch.Tensor, list[dict]]:
        recipe = load_recipe("cifar100", ["epochs=2", "batch_size=16", f"extraction_batch_size={chunk}",
                                          "grid.lr_mults=[1.0]", "aug=paper"])
        probe = LinearProbe(recipe, ["lastPOOL", "concatPOOL4"], 100, torch.device("cpu"), progress=False)
        probe.fit_augmented(enc, ds, np.arange(len(ds)), num_workers=0)
        return torch.cat([p.flatten() for g in probe.grid.groups.values() for p in g.params]), probe.train_stats

    one_shot, one_shot_stats = trained(16)
    assert max(seen) == 16
    seen.clear()
    chunked, chunked_stats = trained(5)
    assert max(seen) == 5 and seen[:4] == [5, 5, 5, 1]  # 60 images: batches 16, 16, 16, 12
    torch.testing.assert_close(chunked, one_shot)
    assert [s["top1"] for s in chunked_stats] == [s["top1"] for s in one_shot_stats]


def test_skip_existing_reuses_only_identical_runs(world, tmp_path):
    kwargs = dict(root=world["roots"]["clevr"], out_dir=tmp_path, cache_dir=world["cache"], device="cpu",
                  progress=False, num_workers=0)
    first = run_protocol("clevr_dist", world["ckpt"], overrides=FAST, **kwargs)
    stamp = json.loads(first.read_text())["date"], first.stat().st_mtime_ns
    again = run_protocol("clevr_dist", world["ckpt"], overrides=FAST, **kwargs)
    assert again == first and (json.loads(again.read_text())["date"], again.stat().st_mtime_ns) == stamp
    changed = run_protocol("clevr_dist", world["ckpt"], overrides=[*FAST, "seed=1"], **kwargs)
    assert load_result(changed).seed == 1 and changed.stat().st_mtime_ns != stamp[1]


def test_suite_runs_configured_datasets_and_skips_the_rest(world, tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    data.mkdir()
    (data / "cifar100").symlink_to(world["roots"]["cifar100"])
    monkeypatch.setenv("IJEPA_EVAL_DATA", str(data))
    monkeypatch.setenv("IJEPA_EVAL_CONFIG", str(tmp_path / "no-such-data.yaml"))
    args = ["suite", "--ckpt", str(world["ckpt"]), "--cache-dir", str(world["cache"]), "--out", str(tmp_path / "out"),
            "--device", "cpu", "--quiet", "--workers", "0", *FAST]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "skipping in1k_linear: no data root configured for 'imagenet'" in err
    assert "skipping cifar100_attentive: an online attentive probe; run `ijepa-eval attentive --recipe" in err
    assert sorted(p.name.split("__")[-1] for p in (tmp_path / "out").glob("*.json")) == ["cifar100.json"]


def test_suite_goes_on_after_a_failing_protocol_and_exits_1(world, tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    (data / "cifar100").mkdir(parents=True)  # configured but empty: cifar100 fails, places205 must still run
    (data / "places205").symlink_to(world["roots"]["places205"])
    monkeypatch.setenv("IJEPA_EVAL_DATA", str(data))
    monkeypatch.setenv("IJEPA_EVAL_CONFIG", str(tmp_path / "no-such-data.yaml"))
    args = ["suite", "--ckpt", str(world["ckpt"]), "--cache-dir", str(world["cache"]), "--out", str(tmp_path / "out"),
            "--device", "cpu", "--quiet", "--workers", "0", *FAST]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "suite: cifar100 failed: " in err and "suite: 1 of 2 protocols failed: cifar100" in err
    assert sorted(p.name.split("__")[-1] for p in (tmp_path / "out").glob("*.json")) == ["places205.json"]


def test_representations_share_memory_and_match_the_featureset(world):
    from ijepa_eval.data import get_dataset
    from ijepa_eval.encoders import load_encoder
    from ijepa_eval.features import get_features
    from ijepa_eval.protocols.runner import representation_views

    enc = load_encoder(str(world["ckpt"]))
    fs = get_features(enc, get_dataset("cifar100", world["roots"]["cifar100"], "test"), cache_dir=world["cache"],
                      device="cpu", num_workers=0, progress=False)
    views = representation_views(fs, ["lastPOOL", "concatPOOL4"])
    for name, view in views.items():
        assert view.equal(fs.representation(name))
    assert views["lastPOOL"].untyped_storage().data_ptr() == views["concatPOOL4"].untyped_storage().data_ptr()


def test_bad_device_is_a_one_line_error_before_any_work(world, tmp_path, capsys):
    assert main(cli_args(world, ["clevr", "--task", "count"], "clevr", tmp_path, "--device", "gpu")) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and "invalid device 'gpu'" in err
    assert not list(tmp_path.glob("*.json"))


def test_a_recipe_on_another_dataset_is_its_own_task(world, tmp_path):
    """knn on CLEVR and knn on CIFAR must not overwrite each other (same model, same recipe)."""
    for protocol_args, root_key in ((["knn", "--dataset", "cifar100"], "cifar100"),
                                    (["knn", "--dataset", "clevr_count"], "clevr")):
        assert main(cli_args(world, protocol_args, root_key, tmp_path)) == 0
    tasks = sorted(load_result(p).protocol["task"] for p in tmp_path.glob("*.json"))
    assert tasks == ["knn@cifar100", "knn@clevr_count"]
    assert all(p.name.endswith(("__knn@cifar100.json", "__knn@clevr_count.json")) for p in tmp_path.glob("*.json"))
    path = run_protocol("cifar100", world["ckpt"], root=world["roots"]["cifar100"], out_dir=tmp_path,
                        cache_dir=world["cache"], overrides=FAST, device="cpu", progress=False, num_workers=0)
    assert load_result(path).protocol["task"] == "cifar100"  # the recipe's own dataset: plain name


def test_another_arch_of_the_same_checkpoint_is_not_reused(world, tmp_path, capsys):
    """Same file and branch, other features (no final norm): the earlier result must not be served as this one."""
    out = tmp_path / "runs"
    args = cli_args(world, ["knn", "--dataset", "cifar100"], "cifar100", out, "knn.ks=[1]")
    assert main(args) == 0
    assert main(args) == 0 and "skip: " in capsys.readouterr().out  # identical request: reused
    assert main([*args, "--arch", '{"final_norm": false}']) == 0
    assert "skip: " not in capsys.readouterr().out
    (path,) = out.glob("*.json")
    assert load_result(path).model["arch"].get("final_norm") is False
