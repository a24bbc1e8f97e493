"""Intervals and significance in the leaderboard: cell text, paper Δ marks, compare's paired tests, Holm, error
bars, Table 2's choice between protocols."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests

from ijepa_eval.cli import main
from ijepa_eval.leaderboard import comparison, plots
from ijepa_eval.leaderboard.cells import delta_cell, paper_interval, result_cell
from ijepa_eval.leaderboard.records import Result, load_results
from ijepa_eval.leaderboard.render import ValueCell
from ijepa_eval.proportions import wilson_interval
from ijepa_eval.results import (
    ResultRecord,
    predictions_path,
    result_filename,
    write_predictions,
    write_result,
)

IJEPA_H14 = {"method": "I-JEPA", "arch_name": "ViT-H/14", "epochs": 300, "data": "IN-1k"}
CLEVR_REAL = {"name": "clevr_count", "test_split": "test", "num_classes": 8,
              "sizes": {"train": 63000, "val": 7000, "test": 15000}}


def result_with(top1: float, ci=None, seed_std=None, selected_on="train_holdout") -> Result:
    seeds = None if seed_std is None else {"n": 3, "seeds": [0, 1, 2], "head": "h",
                                           "top1": {"mean": top1, "std": seed_std, "values": [top1] * 3}}
    record = ResultRecord(protocol={"name": "p", "version": 1, "config": {}}, model={"label": "m"}, features={},
                          dataset={}, metrics={"top1": top1}, selection={"split": selected_on, "head": "h"},
                          metrics_ci={"top1": list(ci)} if ci else {}, seeds=seeds)
    return Result(Path("m__target__p.json"), record)


def test_cell_text():
    # intervals as they are: 98/100 right has the asymmetric Wilson interval [93.0, 99.4], not "98.0 ± 3.2"
    lo, hi = wilson_interval(98, 100)
    assert str(ValueCell(98.0, (100 * lo, 100 * hi))) == "98.0 [93.0, 99.4]"
    assert str(ValueCell(72.44, (71.0, 73.6), "↑", ("concatPOOL4/linear",))) == "72.4 [71.0, 73.6] ↑ (concatPOOL4/linear)"
    assert str(ValueCell(72.44)) == "72.4" and str(ValueCell(None)) == "—"
    assert ValueCell(72.444, (71.0, 73.6), "↑", test_selected=True).csv_fields() == ("72.44", "71.00", "73.60", "‡ ↑")
    assert str(result_cell(result_with(72.44, (71.0, 73.6), selected_on="test"), "top1")) == "72.4‡ [71.0, 73.6]"
    assert str(result_cell(result_with(72.44, (71.0, 73.6), seed_std=0.1234), "top1")) == "72.4 [71.0, 73.6] (seed sd 0.12)"
    assert str(result_cell(None, "top1")) == "—" and str(result_cell(result_with(72.4), "top5")) == "—"
    # Δ = ours − paper: ∉ / ∈ place the paper's value against our interval (a range check, not a test)
    assert str(delta_cell(result_with(86.0, (85.1, 86.9)), "top1", 86.7)) == "-0.7 ∈"
    assert str(delta_cell(result_with(88.0, (87.2, 88.8)), "top1", 86.7)) == "+1.3 ∉"
    assert str(delta_cell(result_with(80.0), "top1", 86.7)) == "-6.7" and str(delta_cell(None, "top1", 86.7)) == "—"
    # with probe seeds the interval widens by z·sd on each side, in quadrature: the paper's 86.7 is then inside
    seeded = result_with(88.0, (87.2, 88.8), seed_std=0.6)
    z = norm.isf(0.025)
    assert paper_interval(seeded, "top1") == pytest.approx((88.0 - np.hypot(0.8, z * 0.6), 88.0 + np.hypot(0.8, z * 0.6)))
    assert str(delta_cell(seeded, "top1", 86.7)) == "+1.3 ∈"


def write_run(out_dir: Path, label: str, protocol: str, labels: np.ndarray, top1_pred: np.ndarray, *,
              dataset: dict, ci: dict | None = None, meta: dict | None = None) -> Path:
    """A result JSON plus its predictions file, as run_protocol writes them; metrics from the predictions."""
    hit = top1_pred == labels
    top1 = 100.0 * hit.mean()
    record = ResultRecord(
        protocol={"name": protocol, "version": 1, "config": {}},
        model={"source": f"/ckpts/{label}.pth.tar", "sha256": hashlib.sha256(label.encode()).hexdigest(),
               "format": "ijepa", "branch": "target", "arch": {}, "label": label, "meta": meta or {}},
        features={}, dataset=dataset, metrics={"top1": top1, "top5": top1, "mean_per_class_acc": top1},
        selection={"split": "train_holdout", "head": "h", "metric": "top1"},
        metrics_ci=ci if ci is not None else {"top1": [top1 - 2.0, top1 + 2.0]},
    )
    top5 = np.stack([top1_pred, *[(top1_pred + k) % 3 + 3 for k in range(4)]], 1)  # never the label further down
    record.predictions = write_predictions(predictions_path(out_dir / result_filename(record)), labels, top5,
                                           np.arange(len(labels)))
    return write_result(record, out_dir)


def test_paper_table_cells_carry_intervals_and_delta_marks(tmp_path):
    labels = np.zeros(10, dtype=np.int64)  # predictions are not read by paper tables; the JSON's interval is
    runs = tmp_path / "runs"
    write_run(runs, "h14", "clevr_count", labels, labels, meta=IJEPA_H14,
              dataset={**CLEVR_REAL, "fingerprint": {"test": "f"}},
              ci={"top1": [84.0, 87.0]})  # top1 100.0 from the predictions, interval around the paper's 86.7
    out = tmp_path / "t"
    assert main(["table", str(runs), "--out", str(out)]) == 0
    table4 = pd.read_csv(out / "table4.csv", dtype=str, keep_default_na=False)
    row = table4[(table4["Method"] == "I-JEPA") & (table4["Arch"] == "ViT-H/14")].iloc[0]
    assert [row[f"clevr_count ours{c}"] for c in ("", " lo", " hi", " marks")] == ["100.00", "84.00", "87.00", ""]
    assert (row["clevr_count Δ"], row["clevr_count Δ marks"]) == ("+13.30", "∈")
    md = (out / "table4.md").read_text()
    assert "| 100.0 [84.0, 87.0] | +13.3 ∈ |" in md and "95% interval over test examples" in md
    assert "not a significance test" in md and "paper's own test-set noise" in md
    tex = (out / "table4.tex").read_text()
    assert r"100.0 [84.0, 87.0]" in tex and r"+13.3 $\in$" in tex and "∈" not in tex and "±" not in tex


def constructed(n_both: int, only_a: int, only_b: int, n_neither: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """labels and two top-1 predictions with a given 2×2 table of per-example correctness."""
    n = n_both + only_a + only_b + n_neither
    labels = np.arange(n) % 3
    wrong = (labels + 1) % 3
    a = np.r_[np.ones(n_both + only_a, bool), np.zeros(only_b + n_neither, bool)]
    b = np.r_[np.ones(n_both, bool), np.zeros(only_a, bool), np.ones(only_b, bool), np.zeros(n_neither, bool)]
    return labels, np.where(a, labels, wrong), np.where(b, labels, wrong)


def test_compare_marks_real_differences_and_ties(tmp_path, capsys):
    runs = tmp_path / "runs"
    folder = {"name": "folder", "test_split": "val", "num_classes": 3, "fingerprint": {"val": "abc"},
              "sizes": {"val": 425}}
    labels, a, b = constructed(300, 30, 5, 90)  # A beats the baseline on 30 examples, loses on 5
    write_run(runs, "baseline", "shapes", labels, b, dataset=folder)
    write_run(runs, "A", "shapes", labels, a, dataset=folder)
    labels_c, c, b_c = constructed(300, 8, 5, 112)
    write_run(runs, "baseline", "counts", labels_c, b_c, dataset={**folder, "fingerprint": {"val": "def"}})
    write_run(runs, "A", "counts", labels_c, c, dataset={**folder, "fingerprint": {"val": "def"}})
    write_run(runs, "A", "other", labels, a, dataset=folder)
    write_run(runs, "baseline", "other", labels, b, dataset={**folder, "fingerprint": {"val": "zzz"}})

    out = tmp_path / "cmp"
    assert main(["compare", "--results", str(runs), "--reference", "baseline", "--out", str(out),
                 "--protocols", "shapes,counts,other", "--plot"]) == 0
    printed = capsys.readouterr().out
    p_shapes = mcnemar([[300, 30], [5, 90]], exact=False, correction=False).pvalue  # McNemar's score test
    assert f"shapes: A (target) − baseline (target) = {100 * 25 / 425:+.1f} top1 points [" in printed
    assert f"(McNemar score test, Tango interval): significantly better (p = {p_shapes:.3g}, unadjusted)" in printed
    p_counts = mcnemar([[300, 8], [5, 112]], exact=False, correction=False).pvalue
    assert "counts: A (target) − baseline (target) = +0.7 top1 points" in printed
    assert f"not significant (p = {p_counts:.3g}, unadjusted)" in printed and "at 5%, unadjusted" in printed
    assert "other: A (target) vs baseline (target) not tested: different test sets" in printed

    flat = pd.read_csv(out / "compare.csv", dtype=str, keep_default_na=False).set_index("model")
    assert flat.loc["A (target)", "shapes vs ref"] == "win" and flat.loc["A (target)", "counts vs ref"] == "tie"
    assert flat.loc["A (target)", "other vs ref"] == "—" and flat.loc["baseline (target)", "shapes vs ref"] == "—"
    assert float(flat.loc["A (target)", "shapes p"]) == pytest.approx(p_shapes, rel=1e-2)
    assert flat.loc["A (target)", "shapes p holm"] == "—"  # not adjusted, and the file says so
    top1_a = 100 * 330 / 425
    assert flat.loc["A (target)", "shapes lo"] == f"{top1_a - 2:.2f}"
    assert (flat.loc["A (target)", "shapes interval"], flat.loc["A (target)", "shapes selected on"]) == (
        "percentile", "train_holdout")  # a result that records no ci.method had the old percentile bootstrap
    md = (out / "compare.md").read_text()
    assert f"| A (target) | {top1_a:.1f} [{top1_a - 2:.1f}, {top1_a + 2:.1f}] ↑ (h) |" in md
    assert "↑ / ↓: significantly higher / lower than baseline (target) at 5%, unadjusted" in md
    assert "significantly better (p = " in md and "not tested: different test sets" in md

    # --adjust holm: Holm over the comparison's 2 tests, recorded in the legend, the sentences and the CSV
    assert main(["compare", "--results", str(runs), "--reference", "baseline", "--out", str(out),
                 "--protocols", "shapes,counts,other", "--adjust", "holm"]) == 0
    printed = capsys.readouterr().out
    want = multipletests([p_shapes, p_counts], method="holm")[1]
    assert f"Holm-adjusted p = {want[0]:.3g} over 2 tests" in printed and "after Holm's adjustment over the 2 tests" in printed
    flat = pd.read_csv(out / "compare.csv", dtype=str, keep_default_na=False).set_index("model")
    assert float(flat.loc["A (target)", "shapes p holm"]) == pytest.approx(want[0], rel=1e-2)
    assert float(flat.loc["A (target)", "counts p holm"]) == pytest.approx(want[1], rel=1e-2)
    assert "after Holm's adjustment" in (out / "compare.md").read_text()
    assert main(["compare", "--results", str(runs), "--adjust", "bonferroni"]) == 2

    # the other order: the baseline is significantly worse than A
    rows = comparison.rows_from_results(load_results([runs]))
    tests, _ = comparison.significance(rows, ["shapes"], "top1", "A (target)")
    assert tests[("baseline (target)", "shapes")].verdict == "loss"
    assert comparison.reference_row(rows, "baseline (target)") == comparison.reference_row(rows, "baseline")
    with pytest.raises(Exception, match="unknown reference row 'nobody'"):
        comparison.significance(rows, ["shapes"], "top1", "nobody")


def test_compare_refuses_a_tampered_predictions_file(tmp_path, capsys):
    runs = tmp_path / "runs"
    folder = {"name": "folder", "test_split": "val", "fingerprint": {"val": "abc"}, "sizes": {"val": 425}}
    labels, a, b = constructed(300, 30, 5, 90)
    write_run(runs, "baseline", "shapes", labels, b, dataset=folder)
    path = write_run(runs, "A", "shapes", labels, a, dataset=folder)
    npz = path.parent / json.loads(path.read_text())["predictions"]["file"]
    write_predictions(npz, labels, np.stack([b] * 5, 1), np.arange(len(labels)))  # other numbers, same name
    assert main(["compare", "--results", str(runs)]) != 0
    err = capsys.readouterr().err.strip()
    assert "does not match the sha256 recorded in" in err and len(err.splitlines()) == 1


def test_bars_draw_interval_error_bars(tmp_path):
    values = {"A": {"p": 70.0, "q": 50.0}, "B": {"p": 60.0, "q": None}}
    plain = plots.bars(values, tmp_path / "plain")[1].read_text()
    with_ci = plots.bars(values, tmp_path / "ci", intervals={"A": {"p": (66.0, 73.0), "q": None},
                                                              "B": {"p": (57.0, 64.0)}})[1].read_text()
    assert "LineCollection" not in plain and with_ci.count("LineCollection") >= 1
    assert "95% intervals" in with_ci


def test_scatter_draws_our_interval(tmp_path):
    from ijepa_eval.leaderboard.paper import load_compute, load_paper

    runs = tmp_path / "runs"
    labels = np.zeros(10, dtype=np.int64)
    write_run(runs, "h14", "in1k_1pct_linear", labels, labels, meta={**IJEPA_H14, "gpu_hours": 900},
              dataset={"name": "imagenet_1pct", "test_split": "val"}, ci={"top1": [97.0, 100.0]})
    results = load_results([runs])
    _, ours = plots.scatter_points(load_paper(), load_compute(), results)
    assert [(p["x"], p["y"], p["ci"]) for p in ours] == [(900.0, 100.0, (97.0, 100.0))]
    svg = plots.scatter(load_paper(), load_compute(), results, tmp_path / "scatter")[1].read_text()
    assert "LineCollection" in svg


def test_compare_of_checkpoints_keeps_the_mark_of_a_context_row(tmp_path):
    """`compare CKPT...` names rows by checkpoint; a context-encoder row (an HF I-JEPA conversion) gets † added
    in the table, and its significance mark must still be found under the row's own name."""
    runs = tmp_path / "runs"
    folder = {"name": "folder", "test_split": "val", "num_classes": 3, "fingerprint": {"val": "abc"},
              "sizes": {"val": 425}}
    labels, a, b = constructed(300, 30, 5, 90)
    base = write_run(runs, "baseline", "shapes", labels, b, dataset=folder)
    hf = write_run(runs, "hf", "shapes", labels, a, dataset=folder)
    hf.write_text(hf.read_text().replace('"branch": "target"', '"branch": "context"'))
    rows = [("baseline", {"shapes": load_results([base])[0]}), ("hf", {"shapes": load_results([hf])[0]})]
    tests, skipped = comparison.significance(rows, ["shapes"], "top1")
    assert tests[("hf", "shapes")].verdict == "win" and not skipped
    shown, flat = comparison.compare_frames(rows, ["shapes"], "top1", tests)
    assert shown["model"].tolist() == ["baseline", "hf†"]
    assert str(shown.loc[1, "shapes"]).endswith("↑ (h)") and flat.loc[1, "shapes vs ref"] == "win"

