"""`ijepa-eval shift` end to end at demo size: saved heads, every set on shifted copies, refusals, the table."""

import json
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.proportion import proportion_confint

from ijepa_eval.cli import main
from ijepa_eval.data import get_dataset
from ijepa_eval.data.synthetic import write_imagenet
from ijepa_eval.data.synthetic_shift import write_shift_twins
from ijepa_eval.errors import ConfigError
from ijepa_eval.features import get_features
from ijepa_eval.leaderboard.records import load_results
from ijepa_eval.leaderboard.robustness import robustness_frame, scatter_points, write_robustness
from ijepa_eval.probes.headfile import load_head
from ijepa_eval.results import load_predictions, load_result
from ijepa_eval.stats import metric_intervals

sys.path.insert(0, str(Path(__file__).parent))
from fixtures_checkpoints import write_ijepa_checkpoint  # noqa: E402

FAST = ["epochs=2", "batch_size=16", "logreg.max_iter=30"]
CORRUPTIONS = "gaussian_noise,zoom_blur,fog"


def common(world) -> list[str]:
    return ["--cache-dir", str(world["cache"]), "--out", str(world["out"]), "--device", "cpu", "--quiet",
            "--workers", "0"]


@pytest.fixture(scope="module")
def world(tmp_path_factory, monkeypatch_module):
    d = tmp_path_factory.mktemp("shift")
    write_ijepa_checkpoint(d / "tiny.pth.tar", depth=4, img_size=32)
    write_ijepa_checkpoint(d / "other.pth.tar", depth=4, img_size=32, seed=1)
    imagenet = write_imagenet(d / "imagenet", n_classes=4, n_train_per_class=10, n_val_per_class=4,
                              split_file_per_class=5)
    roots = write_shift_twins(imagenet, d / "data", corruptions=tuple(CORRUPTIONS.split(",")))
    w = {"dir": d, "ckpt": d / "tiny.pth.tar", "other": d / "other.pth.tar", "imagenet": imagenet, "roots": roots,
         "cache": d / "cache", "out": d / "runs"}
    monkeypatch_module.setenv("IJEPA_EVAL_DATA", str(d / "data"))
    for verb in (["linear"], ["lowshot", "--method", "logreg", "dataset.options.allow_custom_split=true"]):
        assert main([*verb, "--ckpt", str(w["ckpt"]), "--root", str(imagenet), *common(w), *FAST]) == 0
    w["linear"] = next(w["out"].glob("*__in1k_linear.json"))
    w["logreg"] = next(w["out"].glob("*__in1k_1pct_logreg.json"))
    return w


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


@pytest.mark.parametrize("kind", ["linear", "logreg"])
def test_saved_head_reproduces_the_results_own_predictions(world, kind):
    path = world[kind]
    r = load_result(path)
    assert r.head_file["format"] == "safetensors-head-v1"
    head = load_head(path.parent / r.head_file["file"], r.head_file["sha256"])
    assert head.kind == ("logreg" if kind == "logreg" else r.heads[[h["name"] for h in r.heads].index(
        r.selection["head"])]["head"])
    assert head.classes == sorted(p.name for p in (world["imagenet"] / "train").iterdir())
    assert head.context["encoder"]["sha256"] == r.model["sha256"] and head.context["result"]["file"] == path.name
    val = get_dataset("imagenet", world["imagenet"], "val")
    fs = get_features(_encoder(world["ckpt"]), val, cache_dir=world["cache"], device="cpu", progress=False)
    again = head.topk(fs.representation(head.representation)).numpy()
    pred = load_predictions(r, path)
    assert np.array_equal(again, pred.top5) and np.array_equal(fs.indices, pred.indices)
    assert r.metrics["top1"] == pytest.approx((again[:, 0] == fs.labels).mean() * 100)


def _encoder(ckpt):
    from ijepa_eval.encoders import load_encoder

    return load_encoder(str(ckpt))


def shift_all_sets(world) -> None:
    """Every set on the linear result's head (a rerun skips what exists: tests may run in any order)."""
    assert main(["shift", "--result", str(world["linear"]), "--root", f"imagenet={world['imagenet']}",
                 "--corruptions", CORRUPTIONS, *common(world)]) == 0


def test_shift_writes_one_result_per_set_matching_independent_recomputation(world):
    out = world["out"]
    shift_all_sets(world)
    results = {load_result(p).shift["set"]: (p, load_result(p)) for p in out.glob("*__shift_*.json")}
    assert set(results) == {"v2-matched-frequency", "v2-threshold0.7", "v2-top-images", "real", "a", "r", "sketch", "c"}
    source = load_result(world["linear"])
    for name, (path, r) in results.items():
        pred = load_predictions(r, path)
        assert r.shift["head"]["sha256"] == source.head_file["sha256"] and r.protocol["reference"]
        assert r.shift["in_val"]["top1"] == source.metrics["top1"] and r.model == source.model
        assert set(r.metrics_ci) >= {"top1"} and all(lo <= r.metrics[m] <= hi for m, (lo, hi) in r.metrics_ci.items())
        if name in ("real", "c"):
            continue
        assert r.metrics["top1"] == pytest.approx((pred.top5[:, 0] == pred.labels).mean() * 100)
        # intervals chosen as for any test split (stats), recorded in `ci`; these tiny sets are not balanced
        # by design, so top-1 gets Wilson's interval (statsmodels)
        assert (r.metrics_ci, r.ci) == metric_intervals(pred.labels, pred.top5, seed=0)
        k = int((pred.top5[:, 0] == pred.labels).sum())
        assert r.ci["method"]["top1"] == "wilson" and r.metrics_ci["top1"] == pytest.approx(
            [100 * v for v in proportion_confint(k, len(pred.labels), method="wilson")])
    # A / R: every prediction among the set's classes (the twins keep classes 0, 2 for A and 1, 3 for R)
    for name, allowed in (("a", {0, 2}), ("r", {1, 3})):
        path, r = results[name]
        assert set(np.unique(load_predictions(r, path).top5)) <= allowed and r.shift["classes"] == "subset"
    # ReaL by the reference README's formula, from real.json and the val file names
    path, r = results["real"]
    pred = load_predictions(r, path)
    val = get_dataset("imagenet", world["imagenet"], "val")
    lists = json.loads((world["roots"]["imagenet_real"] / "real.json").read_text())
    labels = [lists[int(Path(val.files[i]).stem.split("_")[-1]) - 1] for i in pred.indices]
    readme = np.mean([p in labels[i] for i, p in enumerate(pred.top5[:, 0]) if labels[i]]) * 100
    assert r.metrics["top1"] == pytest.approx(readme)
    assert r.shift["real"]["n_excluded"] == sum(1 for x in labels if not x) > 0
    hits = [p in labels[i] for i, p in enumerate(pred.top5[:, 0]) if labels[i]]
    assert r.ci["method"]["top1"] == "wilson" and r.metrics_ci["top1"] == pytest.approx(
        [100 * v for v in proportion_confint(sum(hits), len(hits), method="wilson")])
    # the IN-val predictions are the source result's own: ReaL re-used its features
    src = load_predictions(source, world["linear"])
    assert np.array_equal(pred.top5, src.top5)
    # -C: mean top-1 = mean of the 15 splits' accuracies; no mCE for 3 of 15 corruptions
    path, r = results["c"]
    pred = load_predictions(r, path)
    sizes = list(r.dataset["sizes"].values())
    accs = [h.mean() * 100 for h in np.split(pred.top5[:, 0] == pred.labels, np.cumsum(sizes)[:-1])]
    assert len(accs) == 15 and r.metrics["top1"] == pytest.approx(np.mean(accs)) and "mce" not in r.metrics
    assert r.shift["corruptions"]["paired"] is True and r.ci["method"] == {"top1": "percentile"}
    assert "one draw of the images" in r.ci["resampled"] and set(r.shift["corruptions"]["ci"]) == {
        f"error/{c}" for c in CORRUPTIONS.split(",")}
    # the robustness table and the scatter read them back
    loaded = load_results([out])
    df = robustness_frame(loaded)
    assert list(df.columns[:4]) == ["model", "head", "IN-val", "V2 matched-freq."] and len(df) == 1
    assert "IN-C (3 of 15) top-1" in df.columns and len(scatter_points(loaded)) == 8
    assert "IN-C (3 of 15) mCE ↓" not in df.columns  # mCE needs all 15 corruptions
    # cells as every table makes them (issue 20): value [lo, hi], never ± a half-width
    (lo, hi), v2 = source.metrics_ci["top1"], results["v2-matched-frequency"][1]
    assert source.selection["split"] != "test"
    assert str(df.loc[0, "IN-val"]) == f"{source.metrics['top1']:.1f} [{lo:.1f}, {hi:.1f}]"
    assert str(df.loc[0, "V2 matched-freq."]) == "{:.1f} [{:.1f}, {:.1f}]".format(v2.metrics["top1"],
                                                                                 *v2.metrics_ci["top1"])
    written = write_robustness(loaded, world["dir"] / "tables", ("md", "csv", "tex"))
    assert sorted(p.name for p in written) == ["robustness.csv", "robustness.md", "robustness.tex",
                                               "robustness_scatter.png", "robustness_scatter.svg"]
    md = (world["dir"] / "tables" / "robustness.md").read_text()
    assert "Ours only" in md and "**shift_imagenet_a** v1" in md and "deviation: transform" in md
    assert "±" not in md and "[lo, hi]" in md and "±" not in (world["dir"] / "tables" / "robustness.tex").read_text()
    csv = pd.read_csv(world["dir"] / "tables" / "robustness.csv", dtype=str, keep_default_na=False)
    assert [csv.loc[0, f"IN-val {k}"] for k in ("lo", "hi")] == [f"{lo:.2f}", f"{hi:.2f}"]
    assert csv.loc[0, "V2 matched-freq."] == f"{v2.metrics['top1']:.2f}" and "IN-C (3 of 15) top-1 marks" in csv
    # the HTML page: the table with each set's cell linking to its run page, and the scatter
    assert main(["table", str(out), "--out", str(world["dir"] / "html"), "--html"]) == 0
    page = (world["dir"] / "html" / "index.html").read_text()
    section = page[page.index('<section id="distribution-shift">'):]
    section = section[:section.index("</section>")]
    assert "Ours only" in section and "data:image/svg+xml;base64," in section
    assert "95% interval [" in section and "(wilson)" in section and "±" not in section
    assert len(set(re.findall(r'href="(pages/[^"]*shift_imagenet_[^"]*)"', section))) == 8


def test_test_split_selection_marks_the_cells_whose_images_the_choice_saw(world):
    """A head chosen on IN-val (the paper's convention) makes IN-val, ReaL and IN-C optimistic — their images
    are the IN-val images — but not V2, -A, -R or -Sketch, whose images the choice never saw."""
    shift_all_sets(world)
    loaded = load_results([world["out"]])
    for r in loaded:
        r.record.selection = {**r.record.selection, "split": "test"}
    df = robustness_frame(loaded)
    marked = {c for c in df.columns[2:] if "‡" in str(df.loc[0, c])}
    assert marked == {"IN-val", "ReaL", "IN-C (3 of 15) top-1"}
    csv = pd.read_csv(write_robustness(loaded, world["dir"] / "marked", ("csv",))[0], dtype=str,
                      keep_default_na=False)
    assert csv.loc[0, "ReaL marks"] == "‡" and csv.loc[0, "IN-A marks"] == ""


def test_sets_balanced_by_design_get_the_stratified_bootstrap_at_their_real_sizes():
    """ImageNet-V2 (1000 classes x 10) and ImageNet-C (50 per class in every corruption and severity; 100
    classes here) are balanced by design: score_set gives them the class-stratified bootstrap, as stats gives
    ImageNet val; one image fewer in a V2 class makes the set i.i.d. and Wilson's."""
    from types import SimpleNamespace

    from ijepa_eval.shift.recipes import shift_recipe
    from ijepa_eval.shift.run import SetPlan, score_set

    rng = np.random.default_rng(0)

    def predicted_on(labels, classes, accuracy=0.7):
        top1 = np.where(rng.random(len(labels)) < accuracy, labels, (labels + 1) % classes)
        return np.stack([top1, *[(labels + j) % classes for j in (2, 3, 4, 5)]], 1)

    labels = np.repeat(np.arange(1000), 10)
    fs = SimpleNamespace(labels=labels, indices=np.arange(len(labels)))
    plan = SetPlan(shift_recipe("v2-matched-frequency"), [("val", None)])
    _, ci, record, _ = score_set(plan, [("val", fs, predicted_on(labels, 1000))], seed=0)
    assert record["design"] == "class-balanced" and record["method"]["top1"] == "stratified-percentile"
    fs = SimpleNamespace(labels=labels[1:], indices=np.arange(len(labels) - 1))
    _, _, record, _ = score_set(plan, [("val", fs, predicted_on(labels[1:], 1000))], seed=0)
    assert record["design"] == "iid" and record["method"]["top1"] == "wilson"
    # ImageNet-C: the same 5000 files under every corruption and severity -> one shared, stratified draw
    labels = np.repeat(np.arange(100), 50)
    files = [f"n{c:08d}/ILSVRC2012_val_{i + 1:08d}.JPEG" for i, c in enumerate(labels)]
    splits = [f"{c}/{s}" for c in ("fog", "snow", "frost") for s in range(1, 6)]
    dataset = SimpleNamespace(files=files)
    plan = SetPlan(shift_recipe("c"), [(split, dataset) for split in splits])
    fs = SimpleNamespace(labels=labels, indices=np.arange(len(labels)))
    metrics, ci, record, extra = score_set(plan, [(s, fs, predicted_on(labels, 100)) for s in splits], seed=0)
    assert record["method"] == {"top1": "stratified-percentile"} and extra["corruptions"]["paired"] is True
    assert ci["top1"][0] < metrics["top1"] < ci["top1"][1] and set(extra["corruptions"]["ci"]) == {
        "error/fog", "error/snow", "error/frost"}


def test_all_classes_and_a_rerun_is_skipped(world, capsys):
    shift_all_sets(world)
    capsys.readouterr()
    args = ["shift", "--result", str(world["linear"]), "--sets", "a", *common(world)]
    assert main([*args[:4], "a,sketch", *args[5:], "--all-classes"]) == 0  # sketch is unaffected: a rerun
    path = next(world["out"].glob("*__shift_imagenet_a@all-classes.json"))
    assert load_result(path).shift["classes"] == "all"
    printed = capsys.readouterr().out
    assert "skip:" in printed and not list(world["out"].glob("*sketch@*"))
    # each set's interval method under its numbers, and the legend; never "bootstrap" for a Wilson interval
    assert "intervals: top1 wilson, top5 wilson" in printed and "[lo, hi]: 95% interval over the set's images" in printed
    assert "95% bootstrap" not in printed
    assert main(args) == 0 and "skip:" in capsys.readouterr().out


def test_refusals_are_one_line_and_come_before_any_extraction(world, tmp_path, capsys):
    cache = tmp_path / "cache"
    base = ["--cache-dir", str(cache), "--out", str(tmp_path / "runs"), "--device", "cpu", "--quiet"]
    head = world["linear"].parent / load_result(world["linear"]).head_file["file"]
    # a head trained on another checkpoint's features
    assert main(["shift", "--ckpt", str(world["other"]), "--head", str(head), "--sets", "sketch", *base]) == 2
    assert "was trained on features of another encoder (sha256" in capsys.readouterr().err
    # a broken layout in one set stops the run before any set is extracted
    bad = tmp_path / "v2" / "imagenetv2-top-images-format-val"
    for k in range(5):
        (bad / str(k)).mkdir(parents=True)
        (bad / str(k) / "x.jpeg").write_bytes((world["roots"]["imagenet_v2"] / "imagenetv2-top-images-format-val"
                                               / "0").iterdir().__next__().read_bytes())
    assert main(["shift", "--result", str(world["linear"]), "--sets", "sketch,v2-top-images",
                 "--root", f"v2-top-images={tmp_path / 'v2'}", *base]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "/4 is not a class folder of ImageNetV2 top-images" in err
    assert not cache.exists() or not any(cache.iterdir())
    shift_all_sets(world)
    shifted = next(world["out"].glob("*__shift_imagenet_sketch.json"))
    assert main(["shift", "--result", str(shifted), "--sets", "sketch", *base]) == 2
    assert f"is itself a shift result; pass the ImageNet result it applied ({world['linear'].name})" in \
        capsys.readouterr().err
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IJEPA_EVAL_DATA", str(tmp_path / "nothing"))
        assert main(["shift", "--result", str(world["linear"]), "--sets", "r", *base]) == 2
    assert "no data root for 'imagenet_r'" in (err := capsys.readouterr().err) and "Pass --root r=DIR" in err
    assert main(["shift", "--result", str(world["linear"]), "--sets", "v3", *base]) == 2
    assert "unknown shift set 'v3'" in capsys.readouterr().err
    assert main(["shift", "--result", str(world["linear"]), "--sets", "sketch", "--all-classes", *base]) == 2
    assert "--all-classes applies to ImageNet-A and -R only; add a or r to --sets" in capsys.readouterr().err
    assert main(["shift", "--result", str(world["linear"]), "--sets", "a", "--corruptions", "fog", *base]) == 2
    assert "--corruptions applies to ImageNet-C only" in capsys.readouterr().err


def test_check_fits_refuses_other_representation_width_or_transform(world):
    from types import SimpleNamespace

    from ijepa_eval.shift.source import check_fits, from_result

    source = from_result(world["linear"])
    ctx = source.head.context
    assert source.head.representation == "concatPOOL4"  # 4 blocks x 192
    encoder = SimpleNamespace(info={k: ctx["encoder"][k] for k in ("sha256", "branch", "arch")},
                              has_class_token=False, embed_dim=192, img_size=ctx["features"]["img_size"])
    check_fits(source, encoder)  # the encoder it was trained on
    with pytest.raises(ConfigError, match="another transform"):
        check_fits(source, SimpleNamespace(**{**vars(encoder), "img_size": 48}))
    with pytest.raises(ConfigError, match=r"expects 768 features \(concatPOOL4\), this encoder gives 772"):
        check_fits(source, SimpleNamespace(**{**vars(encoder), "embed_dim": encoder.embed_dim + 1}))
    source.head.representation = "concatPOOL8"
    with pytest.raises(ConfigError, match="reads concatPOOL8, which this encoder's features do not offer"):
        check_fits(source, encoder)
    source.head.representation = "lastCLS"
    with pytest.raises(ConfigError, match="reads lastCLS"):
        check_fits(source, encoder)
