"""HTML leaderboard: what index.html and the run pages hold, that results cannot inject markup, and (in
headless Chromium from Debian's `chromium` package, driven by Playwright) that sorting, filtering and run
links work from file://.

`python tests/test_html.py docs/leaderboard.png` re-takes the README screenshot from demo-like results.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ijepa_eval import demo
from ijepa_eval.cli import main
from ijepa_eval.leaderboard.html import PAGES, write_html
from ijepa_eval.leaderboard.html_table import frame_table, leading_number
from ijepa_eval.leaderboard.records import CONTEXT_NOTE, load_results
from ijepa_eval.results import ResultRecord, iter_result_paths, write_predictions, write_result

EVIL = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">" onclick="window.__pwned=3'
ENCODERS = {"ijepa-target": 0.0, "ijepa-context": -3.0, "random-init": -7.0}  # offsets from a base accuracy
DEMO_TASKS = {  # task -> (recipe name, dataset name, classes, base top-1)
    "clevr_count": ("clevr_count", "clevr_count", 8, 33.0),
    "clevr_dist": ("clevr_dist", "clevr_dist", 6, 61.0),
    "folder_linear": ("folder_linear", "folder", 3, 42.0),
    "knn@clevr_count": ("knn", "clevr_count", 8, 28.0),
}
PAPER_DATA = {  # runs on the paper's evaluation data (sizes as tables.py / splits.py require them)
    "cifar100": ("cifar100", "test", 100, {"train": 50000, "test": 10000}),
    "clevr_count": ("clevr_count", "test", 8, {"train": 63000, "val": 7000, "test": 15000}),
}


def linear_grid(top1: float) -> list[dict]:
    """The paper's 16 heads: {lastPOOL, concatPOOL4} × {linear, bn_linear} × lr mult {1, 0.1} × wd {5e-4, 0}."""
    heads = []
    for i, (rep, head, lr, wd) in enumerate(
        (rep, head, lr, wd) for rep in ("lastPOOL", "concatPOOL4") for head in ("linear", "bn_linear")
        for lr in (1.0, 0.1) for wd in (5e-4, 0.0)
    ):
        score = round(top1 - 0.4 * (15 - i), 1)  # the last head wins, with `top1` on test
        heads.append({"name": f"{rep}/{head}/lr{lr:g}x/wd{wd:g}", "representation": rep, "head": head,
                      "lr_mult": lr, "wd": wd, "scores": {"train_holdout": {"top1": score + 2}, "test": {"top1": score}}})
    return heads


def knn_heads(top1: float) -> list[dict]:
    return [{"name": f"lastPOOL/knn/k{k}", "representation": "lastPOOL", "head": "knn", "k": k, "T": 0.07,
             "scores": {"train_holdout": {"top1": top1 + 1 - j}, "test": {"top1": top1 - j}}}
            for j, k in enumerate((20, 10, 100, 200))]


def make_run(out: Path, label: str, task: str, top1: float, *, ci: float = 1.5, dataset: dict | None = None,
             meta: dict | None = None, deviations: list[str] | None = None, config: dict | None = None) -> Path:
    """A result JSON written the way run_protocol writes it (ResultRecord + write_result), schema v2 fields filled."""
    recipe = DEMO_TASKS.get(task, (task,))[0]
    heads = knn_heads(top1) if recipe == "knn" else linear_grid(top1)
    record = ResultRecord(
        protocol={"name": recipe, "task": task, "version": 1, "config": config or {"name": recipe, "epochs": 50},
                  "reference": "VISSL configs/config/benchmark/linear_image_classification/clevr_count",
                  "deviations": deviations or []},
        model={"source": f"/ckpts/{label}.pth.tar", "sha256": hashlib.sha256(label.encode()).hexdigest(),
               "format": "ijepa", "branch": "target", "arch": {"embed_dim": 192}, "label": label, "meta": meta or {}},
        features={"representations": ["lastPOOL", "concatPOOL4"]},
        dataset=dataset or {"name": DEMO_TASKS[task][1], "test_split": "test", "num_classes": DEMO_TASKS[task][2],
                            "sizes": {"train": 3600, "val": 400, "test": 1000}},
        metrics={"top1": top1, "top5": min(100.0, top1 + 30), "mean_per_class_acc": top1 - 2},
        selection={"split": "train_holdout", "head": heads[-1]["name"] if recipe != "knn" else heads[0]["name"],
                   "metric": "top1"},
        heads=heads, env={"python": "3.11.2", "torch": "2.14.1", "gpu": None}, timings={"total_s": 12.5},
        metrics_ci={"top1": [round(top1 - ci, 1), round(top1 + ci * 0.9, 1)]},
        date="2026-11-29T12:00:00+00:00",
    )
    return write_result(record, out)


def demo_like(out: Path) -> Path:
    """3 encoders × the demo's 4 tasks on CLEVR-mini, and one model on the paper's data (CIFAR-100 and CLEVR)."""
    for label, offset in ENCODERS.items():
        for task, (_, _, _, base) in DEMO_TASKS.items():
            make_run(out, label, task, base + offset, meta={"method": "I-JEPA", "arch_name": "ViT-tiny/8"},
                     deviations=["CLEVR-mini (procedural) instead of CLEVR v1.0"])
    h14 = {"method": "I-JEPA", "arch_name": "ViT-H/14", "epochs": 300, "data": "IN-1k"}
    for task, top1, ci in (("cifar100", 87.9, 0.7), ("clevr_count", 84.0, 0.6)):
        name, split, classes, sizes = PAPER_DATA[task]
        make_run(out, "ijepa_h14", task, top1, ci=ci, meta=h14, config={"name": task},
                 dataset={"name": name, "test_split": split, "num_classes": classes, "sizes": sizes})
    return out


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """Demo-like results plus one whose label, recipe name and deviation are markup; index.html built."""
    root = tmp_path_factory.mktemp("html")
    runs = demo_like(root / "runs")
    make_run(runs, EVIL, "clevr_count", 12.3, deviations=[f"dev {EVIL}"], config={"name": EVIL})
    write_html(root / "site", load_results([runs]), sources=[str(runs)])
    return root / "site"


def _script_and_csp(html: str) -> tuple[list[str], str]:
    scripts = re.findall(r"<script>(.*?)</script>", html, flags=re.S)
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html).group(1)
    return scripts, csp


def test_leading_number_reads_cells_as_tables_write_them():
    assert leading_number("86.7") == 86.7
    assert leading_number("+0.4 (in CI)") == 0.4
    assert leading_number("−1.2*") == -1.2
    assert leading_number("33.4 (concatPOOL4/bn_linear)") == 33.4
    assert leading_number("*33.4") == 33.4 and leading_number("(12)") == 12.0
    assert leading_number("—") is None and leading_number("ViT-H/14") is None and leading_number("lastPOOL/knn") is None


def test_table_text_is_shown_as_is_with_mark_classes_and_sort_values():
    df = pd.DataFrame({"model": ["a", "b", "c"], "cifar100": ["86.7 ± 0.6 ↑ (concatPOOL4/bn_linear)", "—", "80.1 ≈"],
                       "cifar100 Δ": ["-0.8 ↓", "—", "+0.2"], "Arch": ["ViT-H/14", "ViT-L/16", "—"]})
    t = frame_table(df, "t", ["cifar100"], model_column="model")
    assert [c.numeric for c in t.columns] == [False, True, True, False]
    assert [c.protocols for c in t.columns] == ["", "cifar100", "cifar100", ""]
    cells = [[(c.text, c.value, c.cls) for c in row.cells[1:3]] for row in t.rows]
    assert cells == [
        [("86.7 ± 0.6 ↑ (concatPOOL4/bn_linear)", 86.7, "num sig-win"), ("-0.8 ↓", -0.8, "num sig-loss")],
        [("—", None, "missing"), ("—", None, "missing")],
        [("80.1 ≈", 80.1, "num sig-tie"), ("+0.2", 0.2, "num")],
    ]
    assert [r.model for r in t.rows] == ["a", "b", "c"]


def test_markup_from_results_is_escaped_and_only_our_script_may_run(site):
    pages = [site / "index.html", *sorted((site / PAGES).glob("*.html"))]
    assert len(pages) == 1 + 3 * 4 + 2 + 1
    evil_page = next(p for p in pages if "pwned" in p.read_text() and p.name != "index.html")
    for page in (pages[0], evil_page):
        html = page.read_text()
        scripts, csp = _script_and_csp(html)
        assert len(scripts) == 1 and "pwned" not in scripts[0]  # no result text inside <script>
        assert "<script>window.__pwned" not in html and "<img src=x" not in html
        assert '" onclick="' not in html
        assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in html
        digest = base64.b64encode(hashlib.sha256(scripts[0].encode()).digest()).decode()
        assert f"script-src 'sha256-{digest}'" in csp and "default-src 'none'" in csp
    run_html = evil_page.read_text()
    assert "dev &lt;script&gt;" in run_html and "name: &#39;&lt;script&gt;" not in run_html  # recipe as YAML text
    assert "name: &#39;<script>" not in run_html and "&lt;script&gt;window.__pwned=1" in run_html


def test_index_cells_intervals_and_delta_colours(site):
    html = (site / "index.html").read_text()
    # results table: value with its 95% interval from metrics_ci (its method on hover)
    assert '33.0<span class="ci">[31.5, 34.4]</span>' in html
    # paper tables: CIFAR-100 87.9 vs paper 87.5 with interval [87.2, 88.5] -> paper inside; CLEVR count 84.0
    # vs 86.7 with [83.4, 84.5] -> worse
    # (the cell text carries the tables' range mark after the number: '+0.4 ∈', never a significance arrow)
    assert re.search(r'class="num[^"]* delta-in-ci" data-value="0.4" title="paper 87.5 is inside our 95% interval '
                     r'\[87.2, 88.5\]; not a significance test">\+0.4 ∈<', html)
    assert re.search(r'class="num[^"]* delta-worse" data-value="-2.7" title="paper 86.7 is outside our 95% interval '
                     r'\[83.4, 84.5\]; not a significance test">-2.7 ∉<', html)
    assert "a range check, not a test" in html and "paper&#39;s own test-set noise" in html
    assert html.count("data:image/svg+xml;base64,") == 2  # bars + Figure-1 scatter, inline
    ids = re.findall(r' id="([^"]+)"', html)
    assert len(ids) == len(set(ids)) and {"grid", "results", "table1", "table4-ours-only"} <= set(ids)
    assert "CLEVR-mini (procedural) instead of CLEVR v1.0" in html  # declared deviations listed


def test_context_rows_are_explained(tmp_path):
    """A context-encoder result shows as `label (context)†`; the page says what † means, as the tables do."""
    runs = tmp_path / "runs"
    make_run(runs, "ijepa", "clevr_count", 33.0)
    context = json.loads(make_run(tmp_path / "ctx", "ijepa", "clevr_count", 30.0).read_text())
    context["model"]["branch"] = "context"
    (runs / "ijepa__context__clevr_count.json").write_text(json.dumps(context))
    html = write_html(tmp_path / "site", load_results([runs])).read_text()
    assert "ijepa (context)†" in html and CONTEXT_NOTE in html
    assert "significantly higher / lower than ijepa (context)† at 5%, unadjusted" in html  # the first row
    plain = write_html(tmp_path / "plain", load_results([tmp_path / "ctx"])).read_text()
    assert CONTEXT_NOTE not in plain  # no † row, no legend for it


def test_run_page_and_json_copy(site):
    runs = sorted((site / PAGES).glob("ijepa-target-*--clevr_count.html"))
    assert len(runs) == 1
    page = runs[0].read_text()
    for text in ("CLEVR-mini (procedural) instead of CLEVR v1.0", "VISSL configs/config/benchmark", "epochs: 50",
                 "torch", "2.14.1", "total_s", "concatPOOL4/bn_linear", "[31.5, 34.4]"):
        assert text in page, text
    # head-grid heatmap: one lr × wd table per representation/head; the selected head (concatPOOL4/bn_linear,
    # lr 0.1, wd 0: the last of linear_grid, 33.0 on test, 35.0 on train_holdout where it was selected) outlined
    assert page.count('<table class="heatmap">') == 4 and "top1 (%) on train_holdout" in page
    assert re.search(r'<td class="heat selected" style="background:#fde725;color:#000" title="selected head">35.0</td>', page)
    lowest = re.search(r'<td class="heat" style="background:#440154;color:#fff">(\d+\.\d)</td>', page)
    assert lowest and float(lowest.group(1)) == round(33.0 - 0.4 * 15 + 2, 1)  # first head = viridis' bottom
    json_copy = runs[0].with_suffix(".json")
    assert f'href="{json_copy.name}"' in page
    source = next((site.parent / "runs").glob(json_copy.name.replace("--", "__")))
    assert json_copy.read_bytes() == source.read_bytes()
    assert iter_result_paths([site]) == []  # copies are not mistaken for results by `table results/...`
    knn = next((site / PAGES).glob("ijepa-target-*--knn-clevr_count.html")).read_text()
    assert "no learning-rate × weight-decay grid" in knn and "k</button>" in knn


def test_cli_table_html_rebuilds_identically_and_drops_stale_pages(tmp_path, capsys):
    runs = demo_like(tmp_path / "runs")
    out = tmp_path / "tables"
    assert main(["table", str(runs), "--out", str(out), "--html", "--format", "md"]) == 0
    first = (out / "index.html").read_bytes()
    pages = sorted(p.name for p in (out / PAGES).iterdir())
    assert len(pages) == 2 * (3 * 4 + 2) and (out / "table1.md").exists()
    assert main(["table", str(runs), "--out", str(out), "--html", "--format", "md"]) == 0
    assert (out / "index.html").read_bytes() == first  # byte-identical rebuild (fixed SVG id salt)
    gone = next(runs.glob("random-init-*__clevr_dist.json"))
    gone.unlink()
    assert main(["table", str(runs), "--out", str(out), "--html", "--format", "md"]) == 0
    copy = out / PAGES / gone.name.replace("__", "--")
    assert copy.name in pages and not copy.exists() and not copy.with_suffix(".html").exists()
    assert len(list((out / PAGES).iterdir())) == len(pages) - 2
    assert "table: 13 result(s)" in capsys.readouterr().out


def test_demo_leaderboard_writes_index_html(tmp_path, capsys):
    runs = [p for p in sorted(demo_like(tmp_path / "runs").glob("*.json")) if "ijepa_h14" not in p.name]
    margins = demo.leaderboard(tmp_path, runs)
    assert margins["clevr_count"] == 7.0  # ijepa-target 33.0 − random-init 26.0
    html = (tmp_path / "index.html").read_text()
    assert "12 result(s)" in html and html.count('<tr data-protocols="clevr_dist') == 3
    assert re.search(r"significantly higher / lower than random-init( \(target\))? at 5%, unadjusted", html)  # floor
    assert len(list((tmp_path / PAGES).glob("*.html"))) == 12


def test_v1_result_without_intervals_or_deviations(tmp_path):
    path = make_run(tmp_path / "runs", "old", "clevr_count", 40.0)
    data = json.loads(path.read_text())
    data["schema_version"] = 1
    for key in ("metrics_ci", "adaptation", "optimizer", "predictions", "seeds"):
        del data[key]
    del data["protocol"]["deviations"], data["protocol"]["reference"]
    path.write_text(json.dumps(data))
    write_html(tmp_path / "site", load_results([path]))
    html = (tmp_path / "site" / "index.html").read_text()
    assert 'data-value="40.0">40.0</td>' in html and 'class="ci"' not in html and 'id="deviations"' not in html
    page = next((tmp_path / "site" / PAGES).glob("*.html")).read_text()
    assert "none declared" in page and 'class="ci"' not in page and 'data-value="40.0">40.0</td>' in page


def test_predictions_file_copied_only_from_the_results_folder(tmp_path):
    runs = tmp_path / "runs"
    (tmp_path / "secret.txt").write_text("not for publishing")
    ok = make_run(runs, "a", "clevr_count", 40.0)
    bad = make_run(runs, "b", "clevr_dist", 41.0)  # another task: the grid pairs nothing, so nothing is read
    preds = runs / ok.name.replace(".json", ".predictions.npz")
    field = write_predictions(preds, np.arange(4), np.zeros((4, 5), int), np.arange(4))
    for path, value in ((ok, field), (bad, {**field, "file": "../secret.txt"})):
        data = json.loads(path.read_text())
        data["predictions"] = value
        path.write_text(json.dumps(data))
    written = preds.read_bytes()
    write_html(tmp_path / "site", load_results([runs]))
    pages = tmp_path / "site" / PAGES
    assert (pages / preds.name).read_bytes() == written
    assert f'href="{preds.name}">per-example predictions' in next(pages.glob("a-*.html")).read_text()
    assert "per-example predictions" not in next(pages.glob("b-*.html")).read_text()
    assert not any("secret" in p.name or p.read_bytes() == b"not for publishing" for p in pages.iterdir())


def test_html_without_results_still_shows_paper_tables(tmp_path):
    index = write_html(tmp_path, [])
    html = index.read_text()
    assert "Table 1" in html and ">79.3<" in html and 'id="results"' not in html


# ---- in a real browser ----------------------------------------------------------------------------------

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api", reason="Playwright missing: pip install -e '.[test]'")
    executable = chromium_path()
    if executable is None:
        pytest.skip("headless Chromium missing: `make chromium` (apt-get install chromium) installs it")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    pg = context.new_page()
    pg.errors = []
    pg.on("pageerror", lambda err: pg.errors.append(str(err)))
    pg.on("console", lambda msg: pg.errors.append(msg.text) if msg.type == "error" else None)
    yield pg
    context.close()


def column(pg, table_id: str, header: str) -> list[str]:
    """Visible cell texts of one column, top to bottom."""
    return pg.evaluate(
        """([id, header]) => {
          const t = document.querySelector('#' + id + ' table');
          const i = [...t.tHead.rows[0].cells].findIndex(th => th.textContent.trim() === header);
          return [...t.tBodies[0].rows].filter(r => !r.hidden).map(r => r.cells[i].textContent.trim());
        }""", [table_id, header])


def test_browser_sorts_by_clicked_column(site, page):
    page.goto((site / "index.html").as_uri())
    before = column(page, "results", "top-1")
    page.click("#results th:has-text('top-1') button")
    up = [leading_number(t) for t in column(page, "results", "top-1")]
    assert up == sorted(up) and len(up) == len(before) == 15 and up[0] == 12.3
    page.click("#results th:has-text('top-1') button")
    down = [leading_number(t) for t in column(page, "results", "top-1")]
    assert down == sorted(up, reverse=True) and down[0] == 87.9
    assert page.get_attribute("#results th:has-text('top-1')", "aria-sort") == "descending"
    page.click("#results th:has-text('Model') button")  # text: the browser's collation, groups contiguous
    models = column(page, "results", "Model")
    assert models[0].startswith("<script>") and models[-4:] == ["random-init (target)"] * 4
    groups = list(dict.fromkeys(models))
    assert groups.index("ijepa-context (target)") < groups.index("ijepa-target (target)") < groups.index("random-init (target)")
    assert all(models.count(g) == len([m for m in models[models.index(g):] if m == g]) for g in groups)
    assert page.errors == []


def test_browser_filters_by_protocol_and_model(site, page):
    page.goto((site / "index.html").as_uri())
    page.select_option("#filter-protocol", "clevr_dist")
    assert set(column(page, "results", "Protocol")) == {"clevr_dist"}
    assert len(column(page, "results", "Protocol")) == 3
    assert page.is_hidden("#grid th[data-protocols~='folder_linear']")
    assert page.is_visible("#grid th[data-protocols~='clevr_dist']")
    assert page.is_hidden("#table1") and page.is_visible("#table4")  # Table 1 has no clevr_dist column
    assert "protocol=clevr_dist" in page.url
    page.select_option("#filter-model", "random-init (target)")
    assert column(page, "results", "Model") == ["random-init (target)"]
    assert page.inner_text("#results [data-count]") == "1 of 15 rows"
    page.reload()  # the filtered view is linkable: state comes back from the URL hash
    assert page.input_value("#filter-protocol") == "clevr_dist"
    assert column(page, "results", "Model") == ["random-init (target)"]
    assert page.errors == []


def test_browser_follows_run_link_to_page_and_json(site, page):
    page.goto((site / "index.html").as_uri())
    page.select_option("#filter-protocol", "cifar100")
    page.click("#results a:has-text('ijepa_h14 (target)')")
    assert page.url.endswith(".html") and f"/{PAGES}/" in page.url
    assert page.inner_text("h1") == "ijepa_h14 (target) · cifar100"
    assert page.locator("table.heatmap").count() == 4
    page.click("text=result JSON")
    record = json.loads(page.inner_text("body"))
    assert record["metrics"]["top1"] == 87.9 and record["metrics_ci"]["top1"] == [87.2, 88.5]
    page.go_back()
    page.click("text=← leaderboard")
    assert page.url.split("#")[0].endswith("/index.html") and page.errors == []


def test_browser_shows_script_label_as_text_and_runs_nothing(site, page):
    page.goto((site / "index.html").as_uri())
    assert page.evaluate("window.__pwned") is None
    cells = page.locator("#results td", has_text="window.__pwned")
    assert cells.first.inner_text() == f"{EVIL} (target)"
    assert page.locator("#results img[src='x']").count() == 0
    plots = page.locator("#plots img")
    assert plots.count() == 2 and all(w > 0 for w in plots.evaluate_all("imgs => imgs.map(i => i.naturalWidth)"))
    cells.first.locator("a").click()
    assert page.inner_text("h1") == f"{EVIL} (target) · clevr_count"
    assert page.evaluate("window.__pwned") is None
    assert f"dev {EVIL}" in page.inner_text("ul.deviations")
    assert page.errors == []  # also: no CSP violation, i.e. nothing tried to run
    # and the policy is live: an inline script that is not the page's own is refused
    ran = page.evaluate("""() => { const s = document.createElement('script'); s.textContent = 'window.__csp = 1';
                                   document.body.appendChild(s); return window.__csp; }""")
    assert ran is None and any("Content Security Policy" in e for e in page.errors)


def screenshot(png: Path) -> None:
    """The README picture: index.html of demo-like results, top of the page."""
    import tempfile

    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        runs = demo_like(Path(tmp) / "runs")
        index = write_html(Path(tmp) / "site", load_results([runs]), sources=["results/demo/runs"])
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
            pg = b.new_page(viewport={"width": 1280, "height": 1180})
            pg.goto(index.as_uri() + "#protocol=clevr_count")
            pg.click("#results th:has-text('top-1') button")
            pg.click("#results th:has-text('top-1') button")
            pg.screenshot(path=str(png))
            b.close()


if __name__ == "__main__":
    screenshot(Path(sys.argv[1]))


def test_mixed_adaptation_column_links_and_colours_the_result_the_table_shows(tmp_path):
    """Table 2's in1k_1pct column shows MAE's fine-tuned result (the paper fine-tuned MAE): the link, the
    interval tooltip and the Δ colour must be that result's, not those of MAE's better frozen probe."""
    runs = tmp_path / "runs"
    mae = {"method": "MAE", "arch_name": "ViT-H/14", "epochs": 1600, "data": "IN-1k"}
    data = {"name": "imagenet_1pct", "test_split": "val", "num_classes": 1000,
            "sizes": {"train": 12811, "val": 50000}}
    tuned = make_run(runs, "mae", "in1k_1pct_finetune", 72.0, ci=1.0, meta=mae, dataset=data)
    record = json.loads(tuned.read_text())
    tuned.write_text(json.dumps({**record, "adaptation": "finetune"}))
    make_run(runs, "mae", "in1k_1pct_linear", 90.0, ci=1.0, meta=mae, dataset=data)  # better, but frozen
    write_html(tmp_path / "site", load_results([runs]), sources=[str(runs)])
    html = (tmp_path / "site" / "index.html").read_text()
    start = html.index('id="table2"')
    table2 = html[start:html.index("</table>", start)]
    # Δ = 72.0 − 71.5; the paper's 71.5 lies inside the fine-tuned interval [71.0, 72.9]
    assert re.search(r'class="num[^"]* delta-in-ci" data-value="0.5" title="paper 71.5 is inside our 95% '
                     r'interval \[71.0, 72.9\]; not a significance test"', table2)
    assert not re.search(r'in1k_1pct_linear[^"]*"[^>]*>72.0', table2)  # 72.0 never links to the frozen run
    assert re.search(r'href="pages/[^"]*in1k_1pct_finetune[^"]*"[^>]*>72.0', table2)
    assert re.search(r'href="pages/[^"]*in1k_1pct_linear[^"]*"[^>]*>90.0', table2)  # its own `ours frozen` cell


def test_index_bar_plot_draws_the_intervals(site):
    """The page's bar plot shows each bar's 95% interval as `plot bars` and `compare --plot` do."""
    html = (site / "index.html").read_text()
    uri = re.search(r'src="data:image/svg\+xml;base64,([^"]+)" alt="top1 per protocol and model', html).group(1)
    svg = base64.b64decode(uri).decode()
    assert svg.count("LineCollection") >= 1 and "95% intervals" in svg
