"""Loader throughput on ImageNet-like JPEGs: how close the eval pipeline gets to the decode limit (issue 23).

Per core (one thread, in process, best of a few passes):
  decode only   PIL (``open_rgb``) and libjpeg-turbo via TorchCodec (``read_rgb``);
  PIL path      today's reference: PIL decode + Resize 256 bicubic + CenterCrop 224 (+ ToTensor/Normalize
                in the float variant we ran before uint8 loaders);
  tensor path   TorchCodec decode + torchvision v2 Resize (antialias, uint8) + CenterCrop, uint8 out.
Then the tensor path through a DataLoader with 1 → cores workers (img/s against workers × the per-core
rate: the loader's overhead and the machine's scaling), and extraction through ``get_features``
(``decode: tensor``, uint8 loader, device normalisation, cache shards) with a trivially cheap encoder
against decode-only. Goals (issue 23): tensor path ≥ 0.5× of PIL
decode-only per core; loader ≥ 0.9× of workers × per-core rate.

Absolute numbers depend on the CPU and on what else runs (the busy cores are printed); the ratios are
taken minutes apart in one process.

    python benchmarks/bench_loader.py                       # ~1 minute on 2 cores, generated JPEGs
    python benchmarks/bench_loader.py --root /data/imagenet --split val --n 2000   # your own JPEGs
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

GOAL_PIPELINE = 0.5  # tensor path ÷ PIL decode-only, per core
GOAL_SCALING = 0.9  # loader img/s ÷ (workers × per-core tensor path)


def free_cores(busy: int) -> int:
    from ijepa_eval.threads import affinity_cores

    return max(1, affinity_cores() - busy)


def per_core_rates(fns: dict[str, Callable[[Path], Any]], paths: list[Path], repeats: int) -> dict[str, float]:
    """Images per second of each ``fn`` over ``paths`` on one thread: the best of ``repeats`` passes, taken
    in turns (a neighbour's burst of load then slows one pass of each, not every pass of one)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    best = dict.fromkeys(fns, float("inf"))
    try:
        for fn in fns.values():
            fn(paths[0])  # imports, first-call set-up
        for _ in range(repeats):
            for name, fn in fns.items():
                start = time.perf_counter()
                for path in paths:
                    fn(path)
                best[name] = min(best[name], time.perf_counter() - start)
    finally:
        torch.set_num_threads(before)
    return {name: len(paths) / seconds for name, seconds in best.items()}


def loader_rate(root: Path, split: str, workers: int, n: int, batch_size: int = 32) -> float:
    """Images per second through a DataLoader on the tensor path, from the first batch on (worker start-up
    excluded, as it is once per run)."""
    from torch.utils.data import DataLoader, Subset

    from ijepa_eval.data import eval_transform, get_dataset
    from ijepa_eval.data.device import collate_uint8

    ds = get_dataset("folder", root, split, decode="tensor", transform=eval_transform("imagenet", normalize=False))
    loader = DataLoader(Subset(ds, range(min(n, len(ds)))), batch_size=batch_size, num_workers=workers,
                        collate_fn=collate_uint8, prefetch_factor=4 if workers else None)
    it = iter(loader)
    first = next(it)[0]
    seen, start = 0, time.perf_counter()
    for images, _ in it:
        seen += len(images)
    elapsed = time.perf_counter() - start
    return seen / elapsed if seen else len(first) / max(elapsed, 1e-9)


def cheap_encoder(img_size: int = 224):
    """A one-block, 32-wide ViT: a forward costs next to nothing beside decoding, so get_features runs at
    the loader's limit."""
    from timm.models.vision_transformer import VisionTransformer

    from ijepa_eval.encoders import encoder_from_vit

    vit = VisionTransformer(img_size=img_size, patch_size=16, embed_dim=32, depth=1, num_heads=1, num_classes=0,
                            class_token=False, global_pool="avg", fc_norm=False)
    return encoder_from_vit(vit)


def extraction_rate(root: Path, split: str, workers: int, n: int, decode: str = "tensor") -> float:
    """Images per second of get_features (loader, device normalisation, cache shards) with a cheap encoder,
    in its steady loop (meta.json's ``loop_images_per_s``: worker start-up and key hashing excluded)."""
    from torch.utils.data import Subset

    from ijepa_eval.data import get_dataset
    from ijepa_eval.features import get_features

    ds = get_dataset("folder", root, split)
    part = Subset(ds, range(min(n, len(ds))))
    for attr in ("name", "split", "num_classes", "read", "decode"):
        setattr(part, attr, getattr(ds, attr))
    part.labels, part.transform = ds.labels[: len(part)], None
    part.fingerprint = lambda: f"{ds.fingerprint()}:{len(part)}"
    with tempfile.TemporaryDirectory(prefix="bench-extract-") as cache:
        fs = get_features(cheap_encoder(), part, cache_dir=cache, num_workers=workers, device="cpu", n_last_blocks=1,
                          progress=False, decode=decode, batch_size=32)
        return fs.meta["timings"]["loop_images_per_s"]


def run(quick: bool = False, *, root: str | None = None, split: str = "train", n: int | None = None,
        max_workers: int | None = None, repeats: int = 3) -> dict[str, Any]:
    from ijepa_eval.data import eval_transform, get_dataset
    from ijepa_eval.data.decode import open_rgb, read_rgb
    from ijepa_eval.data.synthetic import write_imagenet_like
    from ijepa_eval.threads import affinity_cores, busy_cores

    n = n or (48 if quick else 240)
    busy = busy_cores()
    generated = root is None
    with tempfile.TemporaryDirectory(prefix="bench-loader-") as tmp:
        if generated:
            per_class = -(-n // 8)
            root = write_imagenet_like(Path(tmp) / "imagenet_like", n_classes=8, n_train_per_class=per_class,
                                       n_val_per_class=0, seed=0)
            split = "train"
        ds = get_dataset("folder", root, split)
        paths = [ds.path(i) for i in range(min(n, len(ds)))]
        sizes = [p.stat().st_size for p in paths]
        float_pil = eval_transform("imagenet")
        uint8 = eval_transform("imagenet", normalize=False)
        rates = per_core_rates({
            "decode_pil": open_rgb,
            "decode_tensor": read_rgb,
            "pil_path_float": lambda p: float_pil(open_rgb(p)),
            "pil_path_uint8": lambda p: uint8(open_rgb(p)),
            "tensor_path_uint8": lambda p: uint8(read_rgb(p)),
        }, paths, 1 if quick else repeats)
        cores = max_workers or affinity_cores()
        scaling = {}
        for workers in sorted({1, *range(2, cores + 1, max(1, cores // 4)), cores}):
            rate = loader_rate(Path(root), split, workers, len(paths))
            scaling[workers] = {"images_per_s": round(rate, 1),
                                "vs_linear": round(rate / (workers * rates["tensor_path_uint8"]), 3)}
        extract = extraction_rate(Path(root), split, max(1, free_cores(busy) - 1), len(paths))
    pipeline_ratio = rates["tensor_path_uint8"] / rates["decode_pil"]
    # Worker counts beyond the cores other processes leave free measure the neighbours, not the loader.
    free = free_cores(busy)
    worst_scaling = min(s["vs_linear"] for w, s in scaling.items() if w <= free)
    result = {
        "ratio": round(pipeline_ratio, 3),
        "per_core_images_per_s": {k: round(v, 1) for k, v in rates.items()},
        "vs_decode_pil": {k: round(v / rates["decode_pil"], 3) for k, v in rates.items()},
        "tensor_vs_pil_path": round(rates["tensor_path_uint8"] / rates["pil_path_float"], 2),
        "get_features_cheap_encoder": {
            "workers": max(1, free - 1), "images_per_s": round(extract, 1),
            "vs_decode_pil_x_workers": round(extract / (max(1, free - 1) * rates["decode_pil"]), 3),
            "vs_loader": round(extract / scaling.get(max(1, free - 1), {"images_per_s": float("nan")})["images_per_s"], 3),
        },
        "loader_scaling": scaling,
        "goals": {
            f"tensor path >= {GOAL_PIPELINE} x PIL decode-only per core": pipeline_ratio >= GOAL_PIPELINE,
            f"loader >= {GOAL_SCALING} x workers x per-core rate (up to {free} workers: the free cores)":
                worst_scaling >= GOAL_SCALING,
        },
        "images": len(paths), "mean_kb": round(sum(sizes) / len(sizes) / 1e3, 1),
        "source": "generated ImageNet-like JPEGs (q90, ~400x350)" if generated else str(root),
        "busy_cores_at_start": busy, "cores": affinity_cores(),
    }
    for goal, met in result["goals"].items():
        print(f"  goal {goal}: {'met' if met else 'NOT met'}", flush=True)
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer images, one pass: a smoke run")
    parser.add_argument("--root", default=None, help="a folder of class folders (<root>/<split>/<class>/*.JPEG); "
                        "default: generated ImageNet-like JPEGs")
    parser.add_argument("--split", default="train")
    parser.add_argument("--n", type=int, default=None, help="images (default 240, quick 48)")
    parser.add_argument("--max-workers", type=int, default=None, help="loader scaling up to this (default: cores)")
    args = parser.parse_args(argv)
    result = run(args.quick, root=args.root, split=args.split, n=args.n, max_workers=args.max_workers)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
