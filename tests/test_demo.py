"""`make demo` end to end at toy sizes: every stage runs and writes what the README promises."""

import json

from ijepa_eval import demo
from ijepa_eval.results import load_result


def test_most_prominent_shape_is_largest_over_depth():
    scene = {"objects": [
        {"shape": "cube", "size": "small", "pixel_coords": [0, 0, 7.0]},     # 0.35 / 7  = 0.050
        {"shape": "sphere", "size": "large", "pixel_coords": [0, 0, 12.0]},  # 0.70 / 12 = 0.058
        {"shape": "cylinder", "size": "small", "pixel_coords": [0, 0, 9.0]},
    ]}
    assert demo.most_prominent_shape(scene) == "sphere"
    scene["objects"][1]["pixel_coords"][2] = 15.0  # 0.047: now the near small cube looks larger
    assert demo.most_prominent_shape(scene) == "cube"


def test_demo_runs_end_to_end_at_toy_size(tmp_path):
    out = tmp_path / "demo"
    argv = ["--out", str(out), "--n-train", "60", "--n-val", "30", "--size", "48", "--steps", "4", "--epochs", "1"]
    assert demo.main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["top1"]) == set(demo.ENCODERS)
    assert set(summary["target_minus_random"]) == set(demo.PROTOCOLS)
    for label in demo.ENCODERS:
        assert set(summary["top1"][label]) == set(demo.PROTOCOLS)
    runs = sorted((out / "runs").glob("*.json"))
    assert len(runs) == len(demo.ENCODERS) * len(demo.PROTOCOLS)
    by_key = {(r.model["label"], r.protocol["task"]): r for r in map(load_result, runs)}
    target = by_key[("ijepa-target", "clevr_count")]
    assert target.model["branch"] == "target" and by_key[("ijepa-context", "knn@clevr_count")].model["branch"] == "context"
    assert set(summary["target_vs_random"]) == set(demo.PROTOCOLS)
    assert set(summary["target_vs_random"].values()) <= {"win", "loss", "tie"}
    lo, hi = summary["top1_ci"]["ijepa-target"]["clevr_count"]
    assert lo <= summary["top1"]["ijepa-target"]["clevr_count"] <= hi
    md = (out / "compare.md").read_text()
    assert " ± " not in md and "ijepa-target (target) − random-init" in md and ", unadjusted)" in md
    lo_hi = f"[{lo:.1f}, {hi:.1f}]"  # the cells print the interval itself
    assert f"{summary['top1']['ijepa-target']['clevr_count']:.1f} {lo_hi}" in md
    assert "\n\nProtocols, their references and declared deviations" in md and "- **clevr_count** v" in md
    attentive = by_key[("ijepa-target", "clevr_count_attentive_cached")]
    assert attentive.probe == "attentive" and attentive.features["mode"] == "cached tokens"
    assert "clevr_count_attentive_cached: ijepa-target (target), attentive − linear (clevr_count) = " in md
    margin = summary["top1"]["ijepa-target"]["clevr_dist"] - summary["top1"]["random-init"]["clevr_dist"]
    assert abs(summary["target_minus_random"]["clevr_dist"] - margin) < 1e-6
    for name in ("compare.md", "compare.csv", "leaderboard.png", "leaderboard.svg", "pretrain/latest.pth.tar"):
        assert (out / name).stat().st_size > 0, name
    # the shape task is an ImageFolder of the CLEVR-mini images, one folder per shape
    shapes = {p.name for p in (out / "data" / "clevr_mini_shapes" / "train").iterdir()}
    assert shapes <= {"sphere", "cube", "cylinder"} and shapes
    # a second run reuses data, checkpoint and results
    assert demo.main(argv) == 0
    assert sorted((out / "runs").glob("*.json")) == runs
