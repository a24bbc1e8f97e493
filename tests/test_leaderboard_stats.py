"""Intervals and significance in the leaderboard: cell text, paper Δ marks, compare's paired tests, error bars."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest

from ijepa_eval.cli import main
from ijepa_eval.leaderboard import comparison, plots
from ijepa_eval.leaderboard.records import load_results
from ijepa_eval.leaderboard.tables import delta_cell, marked, value_cell
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


def test_cell_text():
    assert value_cell(72.44, (71.0, 73.6)) == "72.4 ± 1.3" and value_cell(72.44) == "72.4" and value_cell(None) == "—"
    assert marked("72.4 ± 1.3", "win") == "72.4 ± 1.3 ↑" and marked("1.0", "loss") == "1.0 ↓"
    assert marked("1.0", "tie") == "1.0 ≈" and marked("1.0", None) == "1.0"
    # Δ = ours − paper; the mark places the paper's value against our interval
    assert delta_cell(86.0, 86.7, (85.1, 86.9)) == "-0.7 ≈"  # inside: consistent with the paper
    assert delta_cell(88.0, 86.7, (87.2, 88.8)) == "+1.3 ↑"  # paper below our interval
    assert delta_cell(80.0, 86.7, (79.0, 81.0)) == "-6.7 ↓"
    assert delta_cell(80.0, 86.7, None) == "-6.7" and delta_cell(None, 86.7, None) == "—"


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
    assert (row["clevr_count ours"], row["clevr_count Δ"]) == ("100.0 ± 1.5", "+13.3 ≈")
    md = (out / "table4.md").read_text()
    assert "| 100.0 ± 1.5 | +13.3 ≈ |" in md and "95% bootstrap interval" in md
    tex = (out / "table4.tex").read_text()
    assert r"100.0 $\pm$ 1.5" in tex and r"+13.3 $\approx$" in tex and "≈" not in tex and "±" not in tex


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
    p_shapes = binomtest(30, 35, 0.5).pvalue
    assert f"shapes: A (target) − baseline (target) = {100 * 25 / 425:+.1f} top1 points" in printed
    assert f"McNemar exact p = {p_shapes:.3g}: real (better)" in printed
    assert "counts: A (target) − baseline (target) = +0.7 top1 points" in printed and "not significant" in printed
    assert "other: A (target) vs baseline (target) not tested: different test sets" in printed

    flat = pd.read_csv(out / "compare.csv", dtype=str, keep_default_na=False).set_index("model")
    assert flat.loc["A (target)", "shapes vs ref"] == "win" and flat.loc["A (target)", "counts vs ref"] == "tie"
    assert flat.loc["A (target)", "other vs ref"] == "—" and flat.loc["baseline (target)", "shapes vs ref"] == "—"
    assert float(flat.loc["A (target)", "shapes p"]) == pytest.approx(p_shapes, rel=1e-2)
    top1_a = 100 * 330 / 425
    assert flat.loc["A (target)", "shapes lo"] == f"{top1_a - 2:.2f}"
    md = (out / "compare.md").read_text()
    assert f"| A (target) | {top1_a:.1f} ± 2.0 ↑ (h) |" in md and "↑ / ↓: significantly higher / lower" in md
    assert "real (better)" in md and "not tested: different test sets" in md

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
    assert "95% bootstrap intervals" in with_ci


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
    assert shown.loc[1, "shapes"].endswith("↑ (h)") and flat.loc[1, "shapes vs ref"] == "win"
