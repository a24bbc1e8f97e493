"""Static HTML leaderboard: write ``index.html`` (leaderboard grid, every result, plots, paper tables) and one
page per run, built from result JSONs and the paper's reference data only.

This module renders and writes; what each page shows is built in ``index_page`` and ``run_page``.
Self-contained so it works from ``file://`` with no network: CSS and JS inline, plots embedded as SVG data
URIs, each run's JSON copied beside its page. Every string from a result passes Jinja2's autoescaping
(element text and attribute values alike); the JS reads ``data-*`` attributes only, so no result text ever
sits inside a ``<script>``; and a Content-Security-Policy admits only the page's own script (by hash), so
markup that slipped past escaping still could not run.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

from ijepa_eval.io import atomic_open, atomic_write_text
from ijepa_eval.leaderboard.attentive import every_table
from ijepa_eval.leaderboard.comparison import Comparison
from ijepa_eval.leaderboard.index_page import index_context
from ijepa_eval.leaderboard.paper import load_paper
from ijepa_eval.leaderboard.records import Result
from ijepa_eval.leaderboard.run_page import run_context
from ijepa_eval.leaderboard.tables import BuiltTable

TEMPLATES = Path(__file__).with_name("templates")
PAGES = "pages"  # run pages and copies of their JSON (and predictions), beside index.html; regenerated


def environment() -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True, undefined=StrictUndefined)
    script = (TEMPLATES / "leaderboard.js").read_text()
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode("ascii")
    env.globals.update(script=Markup(script), script_hash=f"sha256-{digest}",
                       css=Markup((TEMPLATES / "leaderboard.css").read_text()))
    return env


def _slugs(results: list[Result]) -> dict[Path, str]:
    """A file-name-safe, unique page name per result: its JSON's stem with ``__`` spelled ``--``, so the
    JSON copies do not look like results (``RESULT_GLOB``) and a table over this folder does not count
    them twice."""
    out: dict[Path, str] = {}
    for r in sorted(results, key=lambda r: str(r.path)):
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", r.path.stem.replace("__", "--")).strip("._-") or "run"
        if slug in out.values():
            slug += "-" + hashlib.sha256(str(r.path).encode()).hexdigest()[:8]
        out[r.path] = slug
    return out


def _copy(src: Path, dst: Path) -> None:
    if src.resolve() != dst.resolve():
        with atomic_open(dst, "wb") as f:
            f.write(src.read_bytes())


def _predictions_file(r: Result) -> Path | None:
    """The per-example predictions file the result names, if it exists inside the result's folder (a result
    must not make the site publish some other local file)."""
    if r.predictions_file is None:
        return None
    src = r.predictions_file.resolve()
    return src if src.is_file() and src.is_relative_to(r.path.parent.resolve()) else None


def write_run_pages(results: list[Result], pages: Path, env: Environment) -> dict[Path, str]:
    """``pages/<slug>.html`` + a copy of the JSON (and its predictions file) per result; stale files removed.
    Returns each result's page link relative to index.html."""
    slugs = _slugs(results)
    keep: set[str] = set()
    for r in results:
        slug = slugs[r.path]
        _copy(r.path, pages / f"{slug}.json")
        keep |= {f"{slug}.json", f"{slug}.html"}
        href = None
        if (predictions := _predictions_file(r)) is not None:
            href = re.sub(r"[^A-Za-z0-9._-]+", "-", predictions.name).lstrip(".")
            href = href if href not in keep else f"{slug}.{href}"
            _copy(predictions, pages / href)
            keep.add(href)
        page = env.get_template("run.html").render(**run_context(r, f"{slug}.json", href))
        atomic_write_text(pages / f"{slug}.html", page)
    for stale in pages.glob("*"):
        if stale.is_file() and stale.name not in keep:
            stale.unlink()
    return {path: f"{PAGES}/{slug}.html" for path, slug in slugs.items()}


def write_html(
    out_dir: str | os.PathLike,
    results: list[Result],
    paper: pd.DataFrame | None = None,
    tables: list[BuiltTable] | None = None,
    sources: Sequence[str] = (),
    metric: str = "top1",
    comparison: Comparison | None = None,
) -> Path:
    """Write the run pages, then ``out_dir/index.html`` (last, so it never links to pages not yet written).

    ``paper`` defaults to the reference CSV and ``tables`` to ``every_table(paper, results)`` (the paper's and the attentive one);
    ``comparison`` is the leaderboard grid, over these results (default: every model and protocol of
    ``results`` on ``metric``, tested against the first row).
    """
    out = Path(out_dir)
    paper = load_paper() if paper is None else paper
    tables = every_table(paper, results) if tables is None else tables
    comparison = Comparison.of_results(results, metric=metric) if comparison is None else comparison
    env = environment()
    hrefs = write_run_pages(results, out / PAGES, env)
    page = env.get_template("index.html").render(
        **index_context(results, hrefs, paper, tables, comparison, sources, metric))
    index = out / "index.html"
    atomic_write_text(index, page)
    return index
