"""One Comparison behind compare, the demo and index.html: its tests, table and notes; pairs it must skip."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest
from statsmodels.stats.contingency_tables import mcnemar

from ijepa_eval.cli import main
from ijepa_eval.leaderboard.cells import VALUE_LEGEND
from ijepa_eval.leaderboard.comparison import Comparison
from ijepa_eval.leaderboard.records import load_results

sys.path.insert(0, str(Path(__file__).parent))
from test_leaderboard_stats import constructed, write_run  # noqa: E402

FOLDER = {"name": "folder", "test_split": "val", "num_classes": 3, "fingerprint": {"val": "abc"}, "sizes": {"val": 425}}
TOP1_A, TOP1_BASE = 100 * 330 / 425, 100 * 305 / 425  # A is right on 300 + 30 examples, the baseline on 300 + 5
P_SHAPES = mcnemar([[300, 30], [5, 90]], exact=False, correction=False).pvalue  # McNemar's score test
A_CELL = f"{TOP1_A:.1f} [{TOP1_A - 2:.1f}, {TOP1_A + 2:.1f}] ↑ (h)"


def shapes_runs(runs: Path) -> dict[str, Path]:
    """baseline and A on one test set (A right where the baseline is wrong on 30 examples, the reverse on 5),
    plus A fine-tuned on the same examples under a protocol the baseline lacks."""
    labels, a, b = constructed(300, 30, 5, 90)
    paths = {"baseline": write_run(runs, "baseline", "shapes", labels, b, dataset=FOLDER),
             "A": write_run(runs, "A", "shapes", labels, a, dataset=FOLDER),
             "A ft": write_run(runs, "A", "shapes_ft", labels, a, dataset=FOLDER)}
    tuned = json.loads(paths["A ft"].read_text())
    paths["A ft"].write_text(json.dumps({**tuned, "adaptation": "finetune"}))
    return paths


def test_comparison_holds_its_tests_table_and_notes(tmp_path):
    shapes_runs(tmp_path / "runs")
    results = load_results([tmp_path / "runs"])
    cmp = Comparison.of_results(results, reference="baseline")
    assert cmp.reference == "baseline (target)" and cmp.protocols == ["shapes", "shapes_ft"] and not cmp.skipped
    same = cmp.tests[("A (target)", "shapes")]
    assert (same.verdict, same.method, same.reference_protocol) == ("win", "McNemar score test, Tango interval",
                                                                    "shapes")
    assert same.test.p_value == pytest.approx(P_SHAPES) and same.test.diff == pytest.approx(TOP1_A - TOP1_BASE)
    # the fine-tuned cell is paired with the baseline's frozen cell on the same examples (the paper's Table 2)
    tuned = cmp.tests[("A (target)", "shapes_ft")]
    assert tuned.reference_protocol == "shapes"
    assert cmp.lines == [
        f"shapes: A (target) − baseline (target) = {TOP1_A - TOP1_BASE:+.1f} top1 points "
        f"[{same.test.diff_ci[0]:+.1f}, {same.test.diff_ci[1]:+.1f}] (McNemar score test, Tango interval): "
        f"significantly better (p = {P_SHAPES:.3g}, unadjusted)",
        f"shapes_ft: A (target) − baseline (target) (shapes) = {TOP1_A - TOP1_BASE:+.1f} top1 points "
        f"[{tuned.test.diff_ci[0]:+.1f}, {tuned.test.diff_ci[1]:+.1f}] (McNemar score test, Tango interval): "
        f"significantly better (p = {P_SHAPES:.3g}, unadjusted)",
    ]
    assert str(cmp.table.set_index("model").loc["A (target)", "shapes"]) == A_CELL
    assert cmp.flat_table.set_index("model").loc["A (target)", "shapes_ft vs ref"] == "win"
    assert cmp.notes[0].startswith(VALUE_LEGEND) and "than baseline (target) at 5%, unadjusted" in cmp.notes[0]
    assert cmp.notes[2:4] == [f"- {line}" for line in cmp.lines] and cmp.notes[4] == ""
    assert cmp.notes[5].startswith("Protocols, their references")
    assert cmp.values()["A (target)"] == {"shapes": pytest.approx(TOP1_A), "shapes_ft": pytest.approx(TOP1_A)}
    assert cmp.intervals()["baseline (target)"] == {"shapes": pytest.approx((TOP1_BASE - 2, TOP1_BASE + 2)),
                                                    "shapes_ft": None}
    # mean per-class accuracy: a class-stratified paired bootstrap, whose p-value agrees with its interval
    mpc = Comparison.of_results(results, ["shapes"], "mean_per_class_acc", "baseline")
    boot = mpc.tests[("A (target)", "shapes")]
    assert boot.method == "class-stratified paired bootstrap" and boot.test.p_value == 0.0
    assert mpc.lines[0].startswith("shapes: A (target) − baseline (target) = ")
    assert mpc.lines[0].endswith(f"mean_per_class_acc points [{boot.test.diff_ci[0]:+.1f}, "
                                 f"{boot.test.diff_ci[1]:+.1f}] (class-stratified paired bootstrap): "
                                 "significantly better (p < 0.002, unadjusted)")


def test_holm_adjustment_is_applied_and_said(tmp_path):
    shapes_runs(tmp_path / "runs")
    results = load_results([tmp_path / "runs"])
    cmp = Comparison.of_results(results, reference="baseline", adjust="holm")
    assert cmp.adjust == "holm" and all(t.family == 2 for t in cmp.tests.values())
    same = cmp.tests[("A (target)", "shapes")]
    assert same.p_adjusted == pytest.approx(min(1.0, 2 * P_SHAPES)) and same.verdict == "win"  # two equal p-values
    assert "after Holm's adjustment over the 2 tests of this comparison" in cmp.legend
    assert cmp.lines[0].endswith(f"significantly better (p = {P_SHAPES:.3g}, Holm-adjusted p = "
                                 f"{2 * P_SHAPES:.3g} over 2 tests)")
    assert Comparison.of_results(results, reference="baseline").adjust == "none"
    with pytest.raises(Exception, match="unknown adjustment 'bonferroni'"):
        Comparison.of_results(results, reference="baseline", adjust="bonferroni")


def test_a_missing_predictions_file_skips_its_pair_with_a_note(tmp_path, capsys):
    runs = tmp_path / "runs"
    paths = shapes_runs(runs)
    labels, _, b = constructed(300, 30, 5, 90)
    write_run(runs, "C", "shapes", labels, b, dataset=FOLDER)  # still tested: ties the baseline
    gone = runs / json.loads(paths["A"].read_text())["predictions"]["file"]
    gone.unlink()
    out = tmp_path / "cmp"
    assert main(["compare", "--results", str(runs), "--reference", "baseline", "--out", str(out),
                 "--protocols", "shapes"]) == 0
    printed = capsys.readouterr().out
    why = f"not tested: predictions file {gone} is missing (keep it next to its JSON or re-run the protocol)"
    assert f"shapes: A (target) vs baseline (target) {why}" in printed
    assert "shapes: C (target) − baseline (target) = +0.0 top1 points" in printed
    flat = pd.read_csv(out / "compare.csv", dtype=str, keep_default_na=False).set_index("model")
    assert flat.loc["A (target)", "shapes"] == f"{TOP1_A:.1f}" and flat.loc["A (target)", "shapes vs ref"] == "—"
    assert flat.loc["C (target)", "shapes vs ref"] == "tie"
    assert f"- shapes: A (target) vs baseline (target) {why}" in (out / "compare.md").read_text()

    site = tmp_path / "site"
    assert main(["table", str(runs), "--out", str(site), "--html", "--format", "md", "--reference", "baseline"]) == 0
    assert f"note: leaderboard: shapes: A (target) vs baseline (target) {why}" in capsys.readouterr().err
    html = (site / "index.html").read_text()
    item = f'<li data-protocols="shapes" data-model="A (target)">shapes: A (target) vs baseline (target) {why}</li>'
    assert "pairs not tested (1)" in html and item in html  # hidden with the row by the page's filters
    # the tested cells keep their marks on the page (C ties; A's fine-tuned cell, whose file is there, wins);
    # A's run page offers no predictions to download
    assert html.count('class="num sig-tie"') == 1 and html.count('class="num sig-win"') == 1
    assert "paired tests (2)" in html and "not significant (p = 1, unadjusted)" in html  # each test's sentence
    page = next((site / "pages").glob("A-*--shapes.html")).read_text()
    assert "per-example predictions" not in page


def test_table_reference_writes_the_grid_as_compare_does(tmp_path, capsys):
    runs = tmp_path / "runs"
    shapes_runs(runs)
    out = tmp_path / "tables"
    assert main(["table", str(runs), "--out", str(out), "--reference", "baseline", "--format", "md,csv"]) == 0
    assert "table: 3 result(s)" in capsys.readouterr().out
    md = (out / "compare.md").read_text()
    assert f"| A (target) | {A_CELL} | {A_CELL} |" in md
    assert f"significantly better (p = {P_SHAPES:.3g}, unadjusted)" in md and "than baseline (target)" in md
    flat = pd.read_csv(out / "compare.csv", dtype=str, keep_default_na=False).set_index("model")
    assert flat.loc["A (target)", "shapes vs ref"] == "win" and flat.loc["baseline (target)", "shapes vs ref"] == "—"
    assert not (out / "index.html").exists() and (out / "table1.md").exists()
    # the same files `compare --results` writes for the same reference
    assert main(["compare", "--results", str(runs), "--reference", "baseline", "--out", str(tmp_path / "cmp")]) == 0
    for name in ("compare.md", "compare.csv"):
        assert (out / name).read_bytes() == (tmp_path / "cmp" / name).read_bytes(), name
    # only the formats asked for
    assert main(["table", str(runs), "--out", str(tmp_path / "md"), "--reference", "baseline", "--format", "md"]) == 0
    assert (tmp_path / "md" / "compare.md").exists() and not (tmp_path / "md" / "compare.csv").exists()


def test_table_reference_is_refused_where_no_grid_is_written(tmp_path, capsys):
    runs = tmp_path / "runs"
    shapes_runs(runs)
    out = tmp_path / "tables"
    assert main(["table", str(runs), "--out", str(out), "--reference", "baseline", "--format", "tex"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--reference" in err and "--html" in err
    assert not out.exists()
    # an unknown reference row stops before anything is written
    assert main(["table", str(runs), "--out", str(out), "--reference", "nobody"]) == 2
    assert "unknown reference row 'nobody'" in capsys.readouterr().err and not out.exists()
