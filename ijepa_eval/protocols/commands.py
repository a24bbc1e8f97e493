"""`ijepa-eval linear|lowshot|transfer|clevr|knn|run|suite|finetune|attentive`: run protocol recipes, one result
JSON each.

Every verb maps to recipe names in the top-level ``protocols/`` folder; trailing ``key=value`` arguments
override recipe fields (``epochs=5 optimizer.base_lr=0.1``). torch is imported inside the handlers.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ijepa_eval.encoders.commands import add_checkpoint_args, encoder_from_args, parse_arch
from ijepa_eval.errors import IjepaEvalError
from ijepa_eval.validate import int_at_least

if TYPE_CHECKING:
    from ijepa_eval.results import ResultRecord

COMMON_EXAMPLES = """
common options: key=value overrides any recipe field (epochs=5 batch_size=1024 optimizer.base_lr=0.1 seed=1),
  written together after the options;
  --select-on test reproduces the paper's (optimistic) head selection on the reported split;
  --aug paper re-encodes RandomResizedCrop+flip images every epoch (GPU) instead of cached features;
  --seeds 5 retrains the selected head with 5 seeds and records mean ± std (grid and selection unchanged)."""

VERBS: dict[str, dict[str, Any]] = {
    "linear": dict(
        help="ImageNet-1k linear probe (in1k_linear, paper Table 1)",
        epilog="""examples:
  ijepa-eval linear --ckpt IN1K-vit.h.14-300e.pth.tar --root /data/imagenet
  ijepa-eval linear --ckpt run/latest.pth.tar --branch context epochs=10 --label my-run""",
    ),
    "lowshot": dict(
        help="ImageNet-1k 1%% low-shot: linear grid or logistic regression (paper Table 2)",
        epilog="""examples:
  ijepa-eval lowshot --ckpt IN1K-vit.h.14-300e.pth.tar --root /data/imagenet
  ijepa-eval lowshot --ckpt mae.pth --method logreg --root /data/imagenet""",
    ),
    "transfer": dict(
        help="linear transfer to CIFAR100 / Places205 / iNat18 (paper Table 3)",
        epilog="""examples:
  ijepa-eval transfer --dataset cifar100 --ckpt IN1K-vit.h.14-300e.pth.tar --root /data/cifar100
  ijepa-eval transfer --dataset inat18 --ckpt dino.pth --branch teacher""",
    ),
    "clevr": dict(
        help="CLEVR object counting / depth (paper Table 4)",
        epilog="""examples:
  ijepa-eval clevr --task count --ckpt IN1K-vit.h.14-300e.pth.tar --root /data/CLEVR_v1.0
  ijepa-eval clevr --task dist --ckpt run/latest.pth.tar --select-on test""",
    ),
    "knn": dict(
        help="weighted k-NN (k 10/20/100/200, T 0.07) on any dataset",
        epilog="""examples:
  ijepa-eval knn --dataset imagenet --ckpt IN1K-vit.h.14-300e.pth.tar --root /data/imagenet
  ijepa-eval knn --dataset cifar100 --ckpt mae.pth knn.shots=10""",
    ),
    "run": dict(
        help="run any protocol recipe by name or YAML path",
        epilog="""examples:
  ijepa-eval run cifar100 --ckpt IN1K-vit.h.14-300e.pth.tar --root /data/cifar100
  ijepa-eval run my_recipe.yaml --ckpt run/latest.pth.tar epochs=2""",
    ),
    "suite": dict(
        help="every protocol whose dataset root is configured ($IJEPA_EVAL_DATA or data.yaml)",
        epilog="""examples:
  IJEPA_EVAL_DATA=/datasets ijepa-eval suite --ckpt run/latest.pth.tar
  ijepa-eval suite --ckpt IN1K-vit.h.14-300e.pth.tar --label ijepa-h14 epochs=1""",
    ),
}


def dataset_splits(name: str) -> dict[str, Any]:
    """train/val/test split names of a dataset for the generic kNN recipe (VTAB val where there is one)."""
    from ijepa_eval.data.registry import SOURCES

    splits = SOURCES[name][1] if name in SOURCES else ("train", "val")
    if "test" in splits:
        return {"dataset.test_split": "test", "dataset.val_split": "val" if "val" in splits else None}
    return {"dataset.test_split": "val", "dataset.val_split": None}


def protocols_for(args: argparse.Namespace) -> list[tuple[str, dict[str, Any]]]:
    """(recipe, extra overrides) pairs the verb stands for."""
    from ijepa_eval.protocols.recipes import available_recipes, load_recipe

    if args.command == "linear":
        return [("in1k_linear", {})]
    if args.command == "lowshot":
        return [(f"in1k_1pct_{args.method}", {})]
    if args.command == "transfer":
        return [(args.dataset, {})]
    if args.command == "clevr":
        return [(f"clevr_{args.task}", {})]
    if args.command == "knn":
        return [("knn", {"dataset.name": args.dataset, **dataset_splits(args.dataset)})]
    if args.command == "run":
        return [(args.protocol, {})]
    from ijepa_eval.data import resolve_root
    from ijepa_eval.errors import DatasetError

    chosen = []
    for name in available_recipes():
        recipe = load_recipe(name)
        if recipe.probe == "finetune":  # hours of end-to-end training: only when asked for
            print(f"suite: skipping {name}: fine-tuning; run `ijepa-eval finetune --recipe {name}`", file=sys.stderr)
            continue
        if recipe.probe == "attentive":  # the encoder runs on every training batch for 20 epochs: only when asked for
            print(f"suite: skipping {name}: an online attentive probe; run `ijepa-eval attentive --recipe {name}`",
                  file=sys.stderr)
            continue
        dataset = recipe.dataset.name
        try:
            resolve_root(dataset, args.root)
        except DatasetError:
            print(f"suite: skipping {name}: no data root configured for '{dataset}'", file=sys.stderr)
            continue
        chosen.append((name, {}))
    return chosen


def overrides_of(args: argparse.Namespace) -> dict[str, Any]:
    from ijepa_eval.protocols.recipes import parse_overrides

    flags = {k: v for k, v in (("selection.split", args.select_on), ("aug", getattr(args, "aug", None)),
                               ("seed", args.seed), ("decode", args.decode)) if v is not None}
    return {**parse_overrides(args.overrides), **flags}


def print_summary(path: Path) -> None:
    from ijepa_eval.results import load_result

    r = load_result(path)
    if r.adaptation == "finetune":  # `run`/`compare` of a fine-tuning recipe
        print_finetune_summary(path)
        return
    sel = r.selection
    print(f"\n{r.protocol.get('task') or r.protocol['name']} v{r.protocol['version']} | model {r.model.get('label') or r.model['source']} "
          f"({r.model.get('branch') or 'default'}) | {r.dataset['name']} {r.dataset['test_split']} "
          f"| features {r.features['mode']}")
    print(f"{'head':<42} {sel['split'] + ' top1':>18} {'test top1':>10} {'test top5':>10}")
    for h in r.heads:
        mark = "*" if h["name"] == sel["head"] else " "
        held, test = h["scores"].get(sel["split"], {}), h["scores"].get("test", {})
        print(f"{mark}{h['name']:<41} {held.get('top1', float('nan')):>18.2f} {test.get('top1', float('nan')):>10.2f} "
              f"{test.get('top5', float('nan')):>10.2f}")
    chosen = f"selected on {sel['split']}" if sel["split"] != "none" else "no selection (one probe, last epoch)"
    print(f"{chosen}: {sel['head']} -> {shown_metrics(r)}  ({r.timings.get('total_s', 0):.1f} s)")
    for line in uncertainty_notes(r):
        print(line)
    print(f"result: {path}")


def cmd_protocols(args: argparse.Namespace) -> int:
    from ijepa_eval.devices import is_main_process
    from ijepa_eval.protocols.runner import run_protocol

    jobs = protocols_for(args)
    if not jobs:
        print("suite: no protocol has a configured data root; set $IJEPA_EVAL_DATA or pass --root", file=sys.stderr)
        return 1
    # Load once: a suite reuses the same weights for every protocol.
    ckpt = encoder_from_args(args) if len(jobs) > 1 else args.ckpt
    base = overrides_of(args)
    failed = []
    for name, extra in jobs:
        try:
            path = run_protocol(
                name, ckpt, branch=args.branch, arch=parse_arch(args.arch), root=args.root, out_dir=args.out,
                cache_dir=args.cache_dir, overrides={**extra, **base}, skip_existing=not args.no_skip_existing,
                device=args.device, label=args.label, trust_checkpoint=args.trust_checkpoint,
                num_workers=args.workers, progress=not args.quiet, seeds=args.seeds,
            )
        except IjepaEvalError as err:
            if args.command != "suite":
                raise
            # One protocol's bad data must not cost the others their results.
            print(f"suite: {name} failed: {err}", file=sys.stderr)
            failed.append(name)
            continue
        if is_main_process():  # under torchrun every process returns the path; one prints
            print_summary(path)
    if failed:
        print(f"suite: {len(failed)} of {len(jobs)} protocols failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


FINETUNE_HELP = ("end-to-end fine-tuning, ImageNet-1k 1%% (paper Table 2: in1k_1pct_finetune = I-JEPA App. A.2, "
                 "in1k_1pct_finetune_semivit = the MAE rows)")
FINETUNE_EPILOG = """examples:
  ijepa-eval finetune --ckpt IN1K-vit.h.14-300e.pth.tar --root /data/imagenet          # I-JEPA App. A.2
  ijepa-eval finetune --recipe in1k_1pct_finetune_semivit --ckpt mae_pretrain_vit_large.pth \\
      --root /data/imagenet                                    # Table 2's MAE rows: Semi-ViT's FINETUNE.md
  torchrun --standalone --nproc_per_node 8 -m ijepa_eval.cli finetune --ckpt IN1K-vit.h.14-300e.pth.tar \\
      --root /data/imagenet                                  # same command on 8 GPUs (global batch 512)
  ijepa-eval finetune --ckpt IN1K-vit.h.14-300e.pth.tar --root /data/imagenet --resume   # after a kill
  ijepa-eval finetune --ckpt run/latest.pth.tar --root clevr_mini dataset.name=clevr_count \\
      dataset.test_split=test epochs=2 batch_size=32 --device cpu           # demo data, minutes on a CPU

options: key=value overrides any recipe field (epochs=20 finetune.blr=1e-4 finetune.drop_path=0.1
  finetune.pool=avg finetune.head_norm=fc_norm) and wins over the recipe's per-model-size settings
  (finetune.by_width, picked by the encoder's width: ViT-L 1024, ViT-H 1280); finetune.keep=best chooses the
  epoch on a held-out 10% of the training split (--select-on test: on the reported split, MAE's convention,
  recorded). A checkpoint is written every epoch under --work-dir (default: CACHE/finetune/<result name>);
  --resume continues it exactly."""


def print_finetune_summary(path: Path) -> None:
    """Per-epoch training loss and selection score, then the kept epoch's test numbers."""
    from ijepa_eval.results import load_result

    r = load_result(path)
    sel = r.selection
    print(f"\n{r.protocol.get('task')} v{r.protocol['version']} | model {r.model.get('label') or r.model['source']} "
          f"({r.model.get('branch') or 'default'}) | {r.dataset['name']} {r.dataset['test_split']} | fine-tuned")
    print(f"{'epoch':>6} {'train loss':>11} {(sel['split'] + ' top1') if sel['metric'] else '':>20}")
    for h in r.heads:
        held = h["scores"].get(sel["split"], {}).get("top1")
        mark = "*" if h["name"] == sel["head"] else " "
        print(f"{mark}{h['epoch']:>5} {h['scores']['train']['loss']:>11.4f} {'' if held is None else f'{held:.2f}':>20}")
    how = f"best {sel['metric']} on {sel['split']}" if sel["metric"] else "no selection: last epoch"
    print(f"kept {sel['head']} ({how}) -> {r.dataset['test_split']} {shown_metrics(r)}  "
          f"({r.timings.get('wall_s', 0):.1f} s training + test)")
    for line in uncertainty_notes(r):
        print(line)
    print(f"result: {path}")


SHOWN = (("top1", "top1"), ("top5", "top5"), ("mean_per_class_acc", "mean per-class"))


def shown_metrics(r: ResultRecord) -> str:
    """``top1 72.40 [71.98, 72.81]  top5 …``: each metric with its interval, as recorded in the result."""
    def one(metric: str) -> str:
        lo_hi = f" [{r.metrics_ci[metric][0]:.2f}, {r.metrics_ci[metric][1]:.2f}]" if metric in r.metrics_ci else ""
        return f"{r.metrics[metric]:.2f}{lo_hi}"

    return "  ".join(f"{name} {one(metric)}" for metric, name in SHOWN if metric in r.metrics)


def uncertainty_notes(r: ResultRecord) -> list[str]:
    """What the printed intervals are, whether they are optimistic, and the probe-seed spread."""
    lines = []
    if r.metrics_ci:
        ci = r.ci or {}
        methods = ci.get("method") or {}
        how = ", ".join(f"{name} {methods[m]}" for m, name in SHOWN if m in methods) or "percentile bootstrap"
        design = f"; test split {ci['design']}" if ci.get("design") else ""
        lines.append(f"[lo, hi]: {ci.get('level', 0.95):.0%} interval over test examples ({how}{design})")
    if r.selection.get("split") == "test":
        lines.append("selected on test: the head (or epoch) was chosen on the reported split, so the numbers and "
                     "their intervals are optimistic")
    if r.seeds:
        lines.append(f"over {r.seeds['n']} probe seeds: " + "  ".join(
            f"{k} {v['mean']:.2f} ± {v['std']:.2f} (std)" for k, v in r.seeds.items() if isinstance(v, dict)))
    return lines


def cmd_finetune(args: argparse.Namespace) -> int:
    from ijepa_eval.devices import is_main_process
    from ijepa_eval.protocols.finetuning import run_finetune

    path = run_finetune(
        args.recipe, args.ckpt, branch=args.branch, arch=parse_arch(args.arch), root=args.root, out_dir=args.out,
        cache_dir=args.cache_dir, work_dir=args.work_dir, overrides=overrides_of(args),
        skip_existing=not args.no_skip_existing, resume=args.resume, restart=args.restart, device=args.device,
        label=args.label, trust_checkpoint=args.trust_checkpoint, num_workers=args.workers,
        progress=not args.quiet,
    )
    if is_main_process():
        print_finetune_summary(path)
    return 0


ATTENTIVE_HELP = "V-JEPA's attentive probe on the frozen encoder's patch tokens (in1k_attentive, *_attentive)"
ATTENTIVE_EPILOG = """examples:
  ijepa-eval attentive --ckpt IN1K-vit.h.14-300e.pth.tar --root /data/imagenet          # V-JEPA's IN-1k eval
  ijepa-eval attentive --recipe cifar100_attentive --ckpt IN1K-vit.h.14-300e.pth.tar --root /data/cifar100
  torchrun --standalone --nproc_per_node 8 -m ijepa_eval.cli attentive --ckpt IN1K-vit.h.14-300e.pth.tar \\
      --root /data/imagenet                                  # same command on 8 GPUs (global batch 1024)
  ijepa-eval attentive --recipe in1k_attentive_vjepa2 --ckpt mae.pth --root /data/imagenet   # 20-probe grid
  ijepa-eval attentive --ckpt IN1K-vit.h.14-300e.pth.tar --root /data/imagenet --resume      # after a kill
  ijepa-eval attentive --recipe clevr_count_attentive --tokens cached --ckpt run/latest.pth.tar \\
      --root clevr_mini                                      # cached patch tokens: minutes on a CPU

options: key=value overrides any recipe field (epochs=5 attentive.lrs=[5e-4,1e-3] attentive.wds=[1e-3,4e-3]);
  a grid of several (lr, wd) probes trains on one encoder forward and is chosen on a held-out 10% of train
  (--select-on test: on the reported split, V-JEPA 2's convention, recorded). Online runs (the default) re-run
  the encoder on freshly augmented images every step and write a checkpoint every epoch under --work-dir
  (default: CACHE/attentive/<result name>); --resume continues it exactly. --tokens cached stores last-layer
  patch tokens in the feature cache instead (no augmentation: a different protocol, <recipe>_cached); only
  they take --decode tensor|gpu (the online training transform augments PIL images)."""


def cmd_attentive(args: argparse.Namespace) -> int:
    from ijepa_eval.devices import is_main_process
    from ijepa_eval.protocols.attentive import run_attentive

    overrides = overrides_of(args) | ({"attentive.tokens": args.tokens} if args.tokens else {})
    path = run_attentive(
        args.recipe, args.ckpt, branch=args.branch, arch=parse_arch(args.arch), root=args.root, out_dir=args.out,
        cache_dir=args.cache_dir, work_dir=args.work_dir, overrides=overrides,
        skip_existing=not args.no_skip_existing, resume=args.resume, restart=args.restart, device=args.device,
        label=args.label, trust_checkpoint=args.trust_checkpoint, num_workers=args.workers,
        progress=not args.quiet, max_cache_gb=args.max_cache_gb,
    )
    if is_main_process():
        print_summary(path)
    return 0


def _add_common(parser: argparse.ArgumentParser, aug: bool = True, seeds: bool = True) -> None:
    add_checkpoint_args(parser)
    parser.add_argument("--root", default=None, help="dataset root (default: $IJEPA_EVAL_DATA/<dataset> or data.yaml)")
    parser.add_argument("--cache-dir", default=None, help="feature cache (default: $IJEPA_EVAL_CACHE or ~/.cache/ijepa-eval)")
    parser.add_argument("--out", default="results/runs", help="folder for the result JSON")
    parser.add_argument("--select-on", choices=["train_holdout", "test"], default=None,
                        help="where the best head is chosen (default: the recipe's, train_holdout)")
    if aug:
        parser.add_argument("--aug", choices=["cached", "paper"], default=None,
                            help="cached features (fast, default) or the paper's augmented probe training")
    parser.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda when available)")
    parser.add_argument("--seed", type=int_at_least(0), default=None, help="seed for holdout, shuffling, init (default: recipe's)")
    if seeds:  # retrains a probe head; fine-tuning has no cheap head to retrain
        parser.add_argument("--seeds", type=int_at_least(2), default=None, metavar="N",
                            help="also retrain the selected head with N seeds (N >= 2) and record mean ± std")
    parser.add_argument("--workers", type=int_at_least(0), default=None,
                        help="data loader workers (default: this rank's cores but one)")
    parser.add_argument("--decode", default=None, metavar="BACKEND",
                        help="image decoding: pil (the reference) | tensor (libjpeg-turbo + torch resize, ~2x per "
                             "core) | gpu (nvJPEG); default: the recipe's, pil. Recorded in the result JSON")
    parser.add_argument("--label", default=None, help="model name in result files and tables")
    parser.add_argument("--no-skip-existing", action="store_true",
                        help="re-run even when a result for this model, protocol version and config exists")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="recipe overrides, e.g. epochs=5")


def register(subparsers) -> None:
    from ijepa_eval.cli_base import HelpFormatter

    for verb, spec in VERBS.items():
        parser = subparsers.add_parser(verb, help=spec["help"], description=spec["help"].replace("%%", "%"),
                                       epilog=spec["epilog"] + "\n" + COMMON_EXAMPLES, formatter_class=HelpFormatter)
        if verb == "run":
            parser.add_argument("protocol", help="recipe name (see protocols/*.yaml) or path to a YAML file")
        if verb == "lowshot":
            parser.add_argument("--method", choices=["linear", "logreg"], default="linear", help="probe")
        if verb == "transfer":
            parser.add_argument("--dataset", choices=["cifar100", "places205", "inat18"], required=True)
        if verb == "clevr":
            parser.add_argument("--task", choices=["count", "dist"], required=True)
        if verb == "knn":
            parser.add_argument("--dataset", required=True, help="any dataset name get_dataset knows")
        _add_common(parser)
        parser.set_defaults(func=cmd_protocols)
    parser = subparsers.add_parser("finetune", help=FINETUNE_HELP, description=FINETUNE_HELP.replace("%%", "%"),
                                   epilog=FINETUNE_EPILOG, formatter_class=HelpFormatter)
    parser.add_argument("--recipe", default="in1k_1pct_finetune", help="a probe: finetune recipe name or YAML path")
    parser.add_argument("--work-dir", default=None, help="checkpoints (default: CACHE/finetune/<result name>)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --work-dir from its last epoch")
    parser.add_argument("--restart", action="store_true", help="delete the run in --work-dir and start over")
    _add_common(parser, aug=False, seeds=False)
    parser.set_defaults(func=cmd_finetune)
    from ijepa_eval.features.cache import MAX_TOKENS_GB  # torch-free

    parser = subparsers.add_parser("attentive", help=ATTENTIVE_HELP, description=ATTENTIVE_HELP,
                                   epilog=ATTENTIVE_EPILOG, formatter_class=HelpFormatter)
    parser.add_argument("--recipe", default="in1k_attentive", help="a probe: attentive recipe name or YAML path")
    parser.add_argument("--tokens", choices=["online", "cached"], default=None,
                        help="encoder every step on augmented images (default) or cached patch tokens")
    parser.add_argument("--max-cache-gb", type=float, default=MAX_TOKENS_GB,
                        help="refuse --tokens cached runs whose token cache would exceed this (default: %(default)s)")
    parser.add_argument("--work-dir", default=None, help="checkpoints (default: CACHE/attentive/<result name>)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --work-dir from its last epoch")
    parser.add_argument("--restart", action="store_true", help="delete the run in --work-dir and start over")
    _add_common(parser, aug=False, seeds=False)
    parser.set_defaults(func=cmd_attentive)
