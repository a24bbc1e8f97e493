"""`ijepa-eval shift`: a frozen-probe result's ImageNet head on ImageNet-V2, ReaL, -A, -R, -Sketch and -C.

torch is imported inside the handler so that `ijepa-eval --help` stays fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ijepa_eval.validate import int_at_least

SETS = "v2-matched-frequency,v2-threshold0.7,v2-top-images,real,a,r,sketch,c"
HELP = "the reported ImageNet head on distribution-shift sets (ImageNet-V2, ReaL, -A, -R, -Sketch, -C)"
EPILOG = f"""examples:
  ijepa-eval shift --result results/runs/ijepa-h14-0123456789ab__target__in1k_linear.json
  ijepa-eval shift --result R.json --sets a,r --all-classes          # argmax over all 1000 classes
  ijepa-eval shift --result R.json --sets c --corruptions fog,snow    # an ImageNet-C subset (no mCE)
  ijepa-eval shift --result R.json --sets real --root imagenet=/data/imagenet --root real=/data/real.json
  ijepa-eval shift --ckpt IN1K-vit.h.14-300e.pth.tar --head R.head.safetensors --sets sketch \\
      --root sketch=hf:songweig/imagenet_sketch

sets (default all): {SETS}. Roots: --root SET=PATH (repeatable; v2=PATH serves the three variants,
imagenet=PATH is the ImageNet whose val ReaL relabels), else $IJEPA_EVAL_DATA/<imagenetv2, imagenet-real,
imagenet-a, imagenet-r, imagenet-sketch, imagenet-c> or the data config. Every layout is checked before any
image is decoded. Each set writes one result JSON (95% intervals, per-example predictions, the recipe's
reference and deviations); `ijepa-eval table --html` adds the robustness table.

intervals: chosen as for every result (ijepa_eval.stats) and recorded in each JSON's `ci`: a class-stratified
percentile bootstrap where the set is balanced by design (ImageNet-V2: 10 images per class; ImageNet-C: 50 per
class in every corruption and severity; ReaL: the ImageNet val classes) and at least 50 images are right and
50 wrong, else Wilson's score interval. ImageNet-C's mean top-1, mCE and per-corruption errors: a percentile
bootstrap at every size (class-stratified where balanced, else over all images) on one draw of the images
shared by every corruption and severity."""
LEGEND = ("[lo, hi]: 95% interval over the set's images; its method per metric (stratified-percentile: class-"
          "stratified bootstrap on a set balanced by design; wilson: Wilson score interval; percentile: bootstrap "
          "over all images) is in each result's ci and printed under it")
OPTIMISTIC = ("head chosen on the ImageNet val split (--select-on test): IN-val, and the sets made of its images "
              "(ReaL, ImageNet-C), are optimistic")


def _csv(text: str | None) -> list[str] | None:
    return None if text is None else [t.strip() for t in text.split(",") if t.strip()]


def cmd_shift(args: argparse.Namespace) -> int:
    from ijepa_eval.encoders.commands import parse_arch
    from ijepa_eval.results import load_result
    from ijepa_eval.shift.run import parse_roots, run_shift

    paths = run_shift(
        _csv(args.sets), result=args.result, ckpt=args.ckpt, head=args.head, branch=args.branch,
        arch=parse_arch(args.arch), roots=parse_roots(args.root), all_classes=args.all_classes,
        corruptions=_csv(args.corruptions), out_dir=args.out, cache_dir=args.cache_dir, device=args.device,
        num_workers=args.workers, trust_checkpoint=args.trust_checkpoint, skip_existing=not args.no_skip_existing,
        progress=not args.quiet)
    optimistic = False
    for path in paths:
        r = load_result(path)
        cells = "  ".join(f"{k} {v:.2f} [{r.metrics_ci[k][0]:.2f}, {r.metrics_ci[k][1]:.2f}]" if k in r.metrics_ci
                          else f"{k} {v:.2f}" for k, v in r.metrics.items())
        excluded = (r.shift or {}).get("real", {}).get("n_excluded")
        note = f"  ({excluded} images without ReaL labels excluded)" if excluded is not None else ""
        print(f"{r.shift['set']:<22} {cells}{note}  -> {Path(path).name}")
        print(f"{'':<22} {interval_note(r.ci)}")
        optimistic |= r.selection.get("split") == "test"
    print(LEGEND)
    if optimistic:
        print(OPTIMISTIC)
    return 0


def interval_note(ci: dict | None) -> str:
    """``intervals: top1 wilson, top5 wilson (set iid)`` from a result's ``ci`` record."""
    if not ci:
        return "intervals: percentile bootstrap (written before the method was recorded)"
    methods = ", ".join(f"{m} {v}" for m, v in (ci.get("method") or {}).items())
    drawn = f"; {ci['resampled']}" if ci.get("resampled") else ""
    return f"intervals: {methods} (set {ci.get('design', '?')}{drawn})"


def register(subparsers) -> None:
    from ijepa_eval.cli_base import HelpFormatter
    from ijepa_eval.encoders.commands import add_checkpoint_args

    p = subparsers.add_parser("shift", help=HELP, description=HELP, epilog=EPILOG, formatter_class=HelpFormatter)
    p.add_argument("--result", default=None, help="an ImageNet linear/logreg result JSON whose saved head to apply")
    add_checkpoint_args(p, required=False)
    p.add_argument("--head", default=None, help="a saved head file (with --ckpt, instead of --result)")
    p.add_argument("--sets", default=SETS, help="comma-separated sets")
    p.add_argument("--root", action="append", default=None, metavar="SET=PATH", help="a set's root (repeatable)")
    p.add_argument("--all-classes", action="store_true",
                   help="ImageNet-A/-R: argmax over all classes instead of the set's 200 (the datasets' own eval)")
    p.add_argument("--corruptions", default=None, help="ImageNet-C subset, e.g. fog,snow (default: the 15)")
    p.add_argument("--cache-dir", default=None, help="feature cache (default: $IJEPA_EVAL_CACHE or ~/.cache/ijepa-eval)")
    p.add_argument("--out", default="results/runs", help="folder for the result JSONs")
    p.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda when available)")
    p.add_argument("--workers", type=int_at_least(0), default=None, help="data loader workers (default: spare cores)")
    p.add_argument("--no-skip-existing", action="store_true", help="re-run sets whose result for this head exists")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_shift)
