"""`ijepa-eval features` (extract or reuse cached features, optionally export them) and `ijepa-eval cache`."""

from __future__ import annotations

import argparse

from ijepa_eval.cli_base import HelpFormatter
from ijepa_eval.validate import int_at_least

FEATURES_EPILOG = """examples:
  ijepa-eval features --ckpt IN1K-vit.h.14-300e.pth.tar --dataset imagenet --split val --root /data/imagenet
  ijepa-eval features --ckpt mae.pth --dataset cifar100 --split test --export cifar_test.npz --representation lastCLS
  torchrun --nproc_per_node 8 -m ijepa_eval.cli features --ckpt run/latest.pth.tar --dataset imagenet --split train
The first run extracts and caches every pooled block output (concatPOOL4 and lastPOOL, plus CLS for cls
models); later runs and every protocol reuse the cache. An interrupted run resumes where it stopped."""

CACHE_EPILOG = """examples:
  ijepa-eval cache ls
  ijepa-eval cache rm imagenet-val-3f2a9c0d1e4b5a6c
  ijepa-eval cache rm --all --cache-dir /scratch/feature-cache"""


def add_cache_dir_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cache-dir", metavar="DIR", default=None,
                        help="feature cache folder; unset = $IJEPA_EVAL_CACHE or ~/.cache/ijepa-eval")


def register(subparsers: argparse._SubParsersAction) -> None:
    from ijepa_eval.encoders.commands import add_checkpoint_args

    p = subparsers.add_parser(
        "features", help="extract (or reuse cached) frozen features of a dataset split",
        description="Extract frozen features of a dataset split into the shared cache (or reuse them), "
                    "optionally exporting one representation as an .npz of `features` [N, F] and `labels` [N].",
        epilog=FEATURES_EPILOG, formatter_class=HelpFormatter,
    )
    add_checkpoint_args(p)
    p.add_argument("--dataset", required=True, help="dataset name, e.g. imagenet, cifar100, clevr_count, hf:<id>")
    p.add_argument("--split", default="train", help="dataset split, e.g. train, val, test")
    p.add_argument("--root", default=None, help="dataset root; unset = from $IJEPA_EVAL_DATA or the data config")
    p.add_argument("--export", metavar="FILE.npz", default=None,
                   help="write `features` [N, F] float32, `labels` [N] and `indices` [N] (dataset rows) here")
    p.add_argument("--representation", default="lastPOOL",
                   help="what --export writes: lastPOOL | concatPOOL4 | lastCLS | concatCLS4 (CLS: cls models)")
    add_cache_dir_arg(p)
    p.add_argument("--batch-size", type=int_at_least(1), default=64, metavar="N", help="images per forward pass")
    p.add_argument("--workers", type=int_at_least(0), default=None, metavar="N",
                   help="data loader workers; unset = this rank's cores but one (printed)")
    p.add_argument("--decode", default="pil", metavar="BACKEND",
                   help="image decoding: pil (the reference) | tensor (libjpeg-turbo + torch resize, ~2x per core) "
                        "| gpu (nvJPEG on the device); part of the cache key")
    p.add_argument("--device", default=None, help="cuda, cuda:1 or cpu; unset = cuda when available")
    p.add_argument("--n-last-blocks", type=int_at_least(1), default=4, metavar="N", help="how many last blocks to store (concatPOOL<n>)")
    p.add_argument("--skip-bad-images", action="store_true",
                   help="drop undecodable images (their indices are recorded in the cache) instead of failing")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_features)

    cache = subparsers.add_parser(
        "cache", help="list or remove cached features", description="List or remove feature cache entries.",
        epilog=CACHE_EPILOG, formatter_class=HelpFormatter,
    )
    verbs = cache.add_subparsers(dest="cache_command", metavar="VERB", required=True)
    ls = verbs.add_parser("ls", help="table of cache entries", formatter_class=HelpFormatter, epilog=CACHE_EPILOG)
    add_cache_dir_arg(ls)
    ls.set_defaults(func=run_cache_ls)
    rm = verbs.add_parser("rm", help="remove cache entries", formatter_class=HelpFormatter, epilog=CACHE_EPILOG)
    rm.add_argument("keys", nargs="*", metavar="KEY", help="entry keys as shown by `ijepa-eval cache ls`")
    rm.add_argument("--all", action="store_true", help="remove every entry")
    add_cache_dir_arg(rm)
    rm.set_defaults(func=run_cache_rm)


def run_features(args: argparse.Namespace) -> int:
    import numpy as np
    import torch.distributed as dist

    from ijepa_eval.data import get_dataset
    from ijepa_eval.encoders.commands import encoder_from_args
    from ijepa_eval.features.extract import get_features
    from ijepa_eval.features.featureset import parse_representation
    from ijepa_eval.features.planning import pools_of
    from ijepa_eval.io import atomic_open

    encoder = encoder_from_args(args)
    parse_representation(args.representation, args.n_last_blocks, pools_of(encoder))  # fail before extracting
    dataset = get_dataset(args.dataset, args.root, args.split)
    fs = get_features(encoder, dataset, cache_dir=args.cache_dir, batch_size=args.batch_size,
                      num_workers=args.workers, device=args.device, n_last_blocks=args.n_last_blocks,
                      skip_bad_images=args.skip_bad_images, progress=not args.quiet, decode=args.decode)
    if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
        return 0  # under torchrun every rank extracts its share; rank 0 reports and exports
    how = "cache hit" if fs.meta["cache_hit"] else f"extracted in {fs.meta['extraction_s']:.1f} s"
    dropped = f", {len(fs.meta['bad_indices'])} unreadable dropped" if fs.meta["bad_indices"] else ""
    print(f"{len(fs)} images of {dataset.name}/{dataset.split}{dropped}: {how}; cache entry {fs.meta['cache_key']}")
    if args.export:
        features = fs.representation(args.representation).numpy()
        with atomic_open(args.export, "wb") as f:
            np.savez(f, features=features, labels=fs.labels, indices=fs.indices)
        print(f"wrote {args.representation} features {list(features.shape)} and labels to {args.export}")
    return 0


def run_cache_ls(args: argparse.Namespace) -> int:
    from ijepa_eval.features.cache import iter_entries, resolve_cache_dir
    from ijepa_eval.features.featureset import available_representations

    rows = []
    for entry in iter_entries(args.cache_dir):
        meta = entry.read_meta() or {}
        ckpt = meta.get("checkpoint") or {}
        source = str(ckpt.get("source") or "?").rsplit("/", 1)[-1]
        dataset = meta.get("dataset") or {}
        reps = available_representations(meta.get("n_last_blocks", 1), meta.get("pools", []))
        rows.append([
            entry.key, f"{source} ({str(ckpt.get('sha256') or '?')[:8]})", str(ckpt.get("branch") or "-"),
            f"{dataset.get('name')}/{dataset.get('split')}",
            str(meta.get("n", "?")), ",".join(reps), f"{entry.size_bytes() / 2**20:.1f} MB",
            "yes" if meta.get("complete") else "no",
        ])
    if not rows:
        print(f"no cached features in {resolve_cache_dir(args.cache_dir)}")
        return 0
    header = ["KEY", "CHECKPOINT", "BRANCH", "DATASET/SPLIT", "N", "REPRESENTATIONS", "SIZE", "COMPLETE"]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def run_cache_rm(args: argparse.Namespace) -> int:
    from ijepa_eval.errors import ConfigError
    from ijepa_eval.features.cache import remove_entries

    if bool(args.keys) == bool(args.all):
        raise ConfigError("give cache keys to remove or --all (not both); `ijepa-eval cache ls` lists the keys")
    removed = remove_entries(args.cache_dir, None if args.all else args.keys)
    print(f"removed {len(removed)} cache entr{'y' if len(removed) == 1 else 'ies'}")
    return 0
