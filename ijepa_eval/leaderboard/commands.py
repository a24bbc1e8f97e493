"""CLI verbs of the leaderboard room: table, compare, plot, check. They read result JSONs only
(compare runs missing protocols through run_protocol). Heavy imports happen inside the handlers."""

from __future__ import annotations

import argparse
import sys

TABLE_EPILOG = """examples:
  ijepa-eval table results/runs --out results/tables
  ijepa-eval table results/runs results/demo --models models.yaml --format md,csv
  ijepa-eval table results/runs --out results/tables --html     # also index.html + one page per run
  ijepa-eval table results/runs --reference mae --format md,csv  # also compare.md/.csv: every model vs mae
  ijepa-eval table results/runs --reference mae --adjust holm    # marks adjusted for the number of tests
models.yaml places results in paper rows when their JSON has no model.meta:
  ijepa_h14:      {method: I-JEPA, arch: ViT-H/14, epochs: 300, data: IN-1k}
  3f2a9c01d4e5:   {method: MAE, arch: ViT-H/14, epochs: 1600}     # sha256 prefix"""

COMPARE_EPILOG = """examples:
  ijepa-eval compare ijepa.pth.tar mae.pth dino.pth --protocols cifar100,clevr_count --root /data
  ijepa-eval compare a.pth b.pth --protocols clevr_count --labels ours,baseline --plot
  ijepa-eval compare --results results/runs --protocols cifar100,places205 --reference mae --adjust holm
Cells: value [lo, hi] = the 95% interval over test examples (‡: head chosen on the test split, optimistic),
then ↑ / ↓ / ≈ = significantly better / worse than the reference row (default: the first) / not significant
at 5%, by a paired test on the same test examples (McNemar's score test with Tango's interval for
top1/top5, a paired bootstrap for mean_per_class_acc). Unadjusted unless --adjust holm (Holm-Bonferroni
over every test of the comparison); the output says which."""

PLOT_EPILOG = """examples:
  ijepa-eval plot bars results/runs --protocols cifar100,clevr_count --out results/tables/bars
  ijepa-eval plot scatter results/runs --out results/tables/scatter
  ijepa-eval plot heatmap results/runs/ijepa__target__cifar100.json --out results/tables/heads"""

CHECK_EPILOG = """examples:
  ijepa-eval check --expected expected.yaml results/runs
expected.yaml (YAML or JSON; metric defaults to top1, tolerance to 0.5 absolute):
  - {model: ijepa_h14, protocol: cifar100, value: 87.5, tolerance: 0.5}
  - {model: 3f2a9c01d4e5, protocol: clevr_count, metric: top1, value: 86.7}
  - {model: run/latest.pth.tar, branch: context, protocol: clevr_count, value: 80.0}   # one of its branches
A higher-is-better metric more than `tolerance` above expected passes as "improved"; below fails."""


def _csv_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def cmd_table(args: argparse.Namespace) -> int:
    from ijepa_eval.errors import ConfigError
    from ijepa_eval.leaderboard.attentive import every_table
    from ijepa_eval.leaderboard.comparison import Comparison
    from ijepa_eval.leaderboard.paper import load_paper
    from ijepa_eval.leaderboard.records import load_manifest, load_results
    from ijepa_eval.leaderboard.render import parse_formats
    from ijepa_eval.leaderboard.tables import data_notes, write_tables

    formats = parse_formats(args.format)
    grid_formats = [f for f in formats if f in ("md", "csv")]
    if args.reference and not (args.html or grid_formats):
        raise ConfigError("--reference shapes the leaderboard grid (compare.md/.csv, index.html); add --html or "
                          "md/csv to --format")
    results = load_results(args.results, load_manifest(args.models), skip_missing=True)
    for note in data_notes(results):
        print(note, file=sys.stderr)
    paper = load_paper(args.paper)
    tables = every_table(paper, results)
    grid = (Comparison.of_results(results, reference=args.reference, adjust=args.adjust)
            if args.html or args.reference else None)
    written = write_tables(tables, args.out, formats)
    from ijepa_eval.leaderboard.robustness import write_robustness

    written += write_robustness(results, args.out, formats)  # shift results: the robustness table and scatter
    if grid is not None:
        for line in grid.not_tested:
            print(f"note: leaderboard: {line}", file=sys.stderr)
        if args.reference:
            written += grid.write(args.out, grid_formats)
        if args.html:
            from ijepa_eval.leaderboard.html import write_html

            written.append(write_html(args.out, results, paper, tables, sources=args.results, comparison=grid))
    print(f"table: {len(results)} result(s) -> {len(written)} file(s) in {args.out}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from ijepa_eval.errors import ConfigError
    from ijepa_eval.leaderboard import compare, plots
    from ijepa_eval.leaderboard.comparison import Comparison, rows_from_results
    from ijepa_eval.leaderboard.records import load_results

    protocols = _csv_list(args.protocols) if args.protocols else None
    if args.results:
        if args.checkpoints:
            raise ConfigError("give checkpoints or --results DIR, not both")
        rows = rows_from_results(load_results(args.results))
        out = args.out or args.results[0]
    else:
        if not args.checkpoints or not protocols:
            raise ConfigError("compare needs checkpoints and --protocols P,... (or --results DIR for existing runs)")
        out = args.out or "results/runs"
        labels = _csv_list(args.labels) if args.labels else None
        rows = compare.run_checkpoints(args.checkpoints, protocols, labels=labels, root=args.root, out_dir=out,
                                       cache_dir=args.cache_dir, device=args.device)
        protocols = None  # columns: the recipes' names (a protocol may have been given as a YAML path)
    comparison = Comparison.of(rows, protocols, args.metric, args.reference, args.adjust)
    print(comparison.table.to_string(index=False))
    if comparison.lines:
        print("\n".join(["", f"{comparison.legend}.", "", *comparison.lines]))
    if comparison.footnotes:
        print("\n" + "\n".join(comparison.footnotes))
    written = comparison.write(out)
    if args.plot:
        written += plots.bars(comparison.values(), f"{out}/compare_bars", args.metric, comparison.intervals())
    print("wrote " + ", ".join(map(str, written)))
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from ijepa_eval.errors import ConfigError
    from ijepa_eval.leaderboard import plots
    from ijepa_eval.leaderboard.paper import load_compute, load_paper
    from ijepa_eval.leaderboard.records import load_manifest, load_results

    results = load_results(args.results, load_manifest(args.models), skip_missing=args.kind == "scatter")
    if args.kind == "bars":
        protocols = _csv_list(args.protocols) if args.protocols else None
        written = plots.bars(plots.bar_values(results, protocols, args.metric), args.out, args.metric,
                             plots.bar_intervals(results, protocols, args.metric))
    elif args.kind == "scatter":
        written = plots.scatter(load_paper(args.paper), load_compute(), results, args.out)
    else:
        if len(results) != 1:
            raise ConfigError(f"heatmap needs exactly one result JSON, got {len(results)}; pass a single file")
        written = plots.heatmap(results[0], args.out, args.split, args.metric)
    print("wrote " + ", ".join(map(str, written)))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from ijepa_eval.leaderboard.check import check, load_expected, raise_on_failure
    from ijepa_eval.leaderboard.records import load_results
    from ijepa_eval.leaderboard.render import markdown

    table = check(load_expected(args.expected), load_results(args.results))
    print(markdown(table), end="")
    raise_on_failure(table)
    print(f"check: all {len(table)} passed")
    return 0


def _add_results_inputs(p: argparse.ArgumentParser) -> None:
    """Options shared by the verbs that place results in paper rows."""
    p.add_argument("results", nargs="*", default=["results/runs"], help="result JSON files or folders")
    p.add_argument("--models", help="YAML manifest: model label or sha256 prefix -> {method, arch, epochs, data}")
    p.add_argument("--paper", help="reference CSV (default: results/paper/ijepa_paper.csv)")


def _add_adjust(p: argparse.ArgumentParser) -> None:
    p.add_argument("--adjust", choices=("none", "holm"), default="none",
                   help="multiple-comparison adjustment of the significance marks: none (each test at 5%%, "
                   "said so in the output) or holm (Holm-Bonferroni over every test of the comparison)")


def register(subparsers: argparse._SubParsersAction) -> None:
    from ijepa_eval.cli_base import HelpFormatter

    p = subparsers.add_parser(
        "table", help="paper tables 1-6 with our results beside them (Markdown, CSV, LaTeX, HTML)",
        description="Regenerate the I-JEPA paper's Tables 1-6 showing paper value, ours and Δ = ours − paper. "
        "Reads result JSONs only; folders that do not exist are skipped. A result fills a paper cell only when "
        "its JSON shows it ran on the paper's evaluation data (dataset, split sizes, classes); others (CLEVR-mini, "
        "subsets) are listed under 'ours only' with the reason and a note is printed for each.",
        epilog=TABLE_EPILOG, formatter_class=HelpFormatter,
    )
    _add_results_inputs(p)
    p.add_argument("--out", default="results/tables", help="output folder")
    p.add_argument("--format", default="md,csv,tex", help="comma-separated subset of md,csv,tex")
    p.add_argument("--html", action="store_true",
                   help="also write OUT/index.html (sortable, filterable; works from file://) and OUT/pages/, "
                   "one page per run with a copy of its JSON")
    p.add_argument("--reference", help="the leaderboard row the others are tested against (its label, with or "
                   "without ' (branch)'); writes OUT/compare.md/.csv (as `compare --results` does) in the md/csv "
                   "formats asked for, and sets the grid of --html's index.html (default there: the first row)")
    _add_adjust(p)
    p.set_defaults(func=cmd_table)

    p = subparsers.add_parser(
        "compare", help="checkpoints side by side over protocols (runs what is missing)",
        description="Run or reuse (skip_existing) every checkpoint × protocol and print a table: rows "
        "checkpoints, columns protocols, each cell the reported metric and the winning representation/head.",
        epilog=COMPARE_EPILOG, formatter_class=HelpFormatter,
    )
    p.add_argument("checkpoints", nargs="*", help="checkpoint files (or timm model names)")
    p.add_argument("--protocols", help="comma-separated protocol names")
    p.add_argument("--root", help="dataset root passed to the protocols")
    p.add_argument("--out", help="folder for result JSONs and compare.md/.csv (default results/runs, or the --results folder)")
    p.add_argument("--labels", help="comma-separated row names, one per checkpoint")
    p.add_argument("--cache-dir", help="feature cache folder passed to the protocols")
    p.add_argument("--device", help="torch device for the runs (default: cuda when available)")
    p.add_argument("--results", nargs="+", help="build the table from existing result JSONs / folders instead")
    p.add_argument("--metric", default="top1", help="metric shown in each cell")
    p.add_argument("--reference", help="row the others are tested against: its label, with or without ' (branch)'; "
                   "the first row when not given")
    _add_adjust(p)
    p.add_argument("--plot", action="store_true", help="also write compare_bars.png/.svg")
    p.set_defaults(func=cmd_compare)

    p = subparsers.add_parser(
        "plot", help="bars per protocol, Figure-1-style scatter, head-grid heatmap (PNG + SVG)",
        description="bars: one group per protocol, one bar per model. scatter: IN-1k 1% top-1 vs pretraining "
        "GPU-hours (paper points + models whose meta has gpu_hours). heatmap: lr × wd grid of one run's heads, "
        "one panel per representation/head.",
        epilog=PLOT_EPILOG, formatter_class=HelpFormatter,
    )
    p.add_argument("kind", choices=("bars", "scatter", "heatmap"))
    _add_results_inputs(p)
    p.add_argument("--out", required=True, help="output path without extension (writes .png and .svg)")
    p.add_argument("--protocols", help="bars: comma-separated protocols (default: all found)")
    p.add_argument("--metric", default="top1", help="metric to plot")
    p.add_argument("--split", help="heatmap: score split (default: the split the head was selected on)")
    p.set_defaults(func=cmd_plot)

    p = subparsers.add_parser(
        "check", help="fail (exit 1) when results fall outside expected values (CI guard)",
        description="Compare result JSONs with expected values; prints a pass/fail table and exits 1 when a "
        "value is worse than expected by more than its tolerance or a result is missing.",
        epilog=CHECK_EPILOG, formatter_class=HelpFormatter,
    )
    p.add_argument("--expected", required=True, help="YAML/JSON list of {model, protocol, metric, value, tolerance}")
    p.add_argument("results", nargs="+", help="result JSON files or folders")
    p.set_defaults(func=cmd_check)
