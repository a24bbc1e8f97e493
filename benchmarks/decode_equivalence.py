"""How far the faster decode backends are from the reference PIL path (issue 23): pixels, features, predictions.

For each case the test images go through every backend's loader (uint8, normalised by
``DevicePreprocess``) into one frozen encoder; a logistic-regression probe fit on the PIL path's train
features then classifies each backend's test features. Printed per backend against ``pil``: max and mean
|pixel difference| (0-255) after the transform, the fraction of differing pixels, the per-image feature
cosine (min, mean), and how many test predictions are identical (k / n, with its Clopper-Pearson 95%
interval).

Cases: ``imagenet_like`` — generated ImageNet-like JPEGs (q90, ~400x350) through ImageNet's eval transform
at the encoder's size; ``demo`` — CLEVR-mini as `make demo` renders it (64 px PNGs, a 64 px encoder);
``clevr_mini_128`` — CLEVR-mini at 128 px through CLEVR's Resize (224, 224). ``--root`` measures your own
ImageNet-layout folder instead.

    python benchmarks/decode_equivalence.py                          # ~3 minutes on 2 cores, random-init ViTs
    python benchmarks/decode_equivalence.py --ckpt IN1K-vit.h.14-300e.pth.tar --root /data/imagenet \\
        --cases imagenet --device cuda
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

CASES = ("imagenet_like", "demo", "clevr_mini_128")


def encode(encoder: Any, dataset: Any, prep: Any, batch_size: int = 64) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """(uint8 images after the transform, or None for ``gpu``; lastPOOL features; labels) in dataset order."""
    from torch.utils.data import DataLoader

    from ijepa_eval.data.device import collate_uint8

    pixels, feats, labels = [], [], []
    with torch.inference_mode():
        for images, y in DataLoader(dataset, batch_size=batch_size, collate_fn=collate_uint8):
            if isinstance(images, torch.Tensor):
                pixels.append(images)
            x = prep(images)
            feats.append(encoder.forward_features(x, n_last_blocks=1, pool="avg").float().cpu())
            labels.append(y)
    return (torch.cat(pixels) if pixels else None), torch.cat(feats).numpy(), torch.cat(labels).numpy()


def compare(encoder: Any, make_dataset: Any, transform: Any, device: torch.device) -> dict[str, Any]:
    """Every backend against ``pil`` on one case; ``make_dataset(split, decode, transform)``."""
    from scipy.stats import binomtest
    from sklearn.linear_model import LogisticRegression

    from ijepa_eval.data.device import DevicePreprocess

    cpu_prep, device_prep = DevicePreprocess(device), DevicePreprocess(device, transform=transform)
    _, train_x, train_y = encode(encoder, make_dataset("train", "pil", transform), cpu_prep)
    probe = LogisticRegression(max_iter=2000).fit(train_x, train_y)
    backends = ["pil", "tensor"] + (["gpu"] if device.type == "cuda" else [])
    runs = {}
    for backend in backends:
        gpu = backend == "gpu"
        ds = make_dataset("test", backend, None if gpu else transform)
        runs[backend] = encode(encoder, ds, device_prep if gpu else cpu_prep)
    ref_pixels, ref_x, test_y = runs["pil"]
    ref_pred = probe.predict(ref_x)
    out: dict[str, Any] = {"n_train": len(train_y), "n_test": len(test_y),
                           "pil_top1": round(100 * float((ref_pred == test_y).mean()), 2)}
    for backend in backends[1:]:
        pixels, x, _ = runs[backend]
        cos = (x * ref_x).sum(1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(ref_x, axis=1))
        pred = probe.predict(x)
        row = {"features_bitwise_equal": f"{int((x == ref_x).all(axis=1).sum())}/{len(x)}",
               "feature_cosine_min": float(cos.min()), "feature_cosine_mean": float(cos.mean()),
               "identical_predictions": f"{int((pred == ref_pred).sum())}/{len(pred)}",
               "identical_fraction": float((pred == ref_pred).mean()),
               # Clopper-Pearson 95%: what k of n can say about the rate on unseen images
               "identical_ci95_clopper_pearson": [round(v, 5) for v in binomtest(
                   int((pred == ref_pred).sum()), len(pred)).proportion_ci(method="exact")],
               "top1": round(100 * float((pred == test_y).mean()), 2)}
        if pixels is not None:
            diff = (pixels.int() - ref_pixels.int()).abs()
            row.update(pixel_max_diff=int(diff.max()), pixel_mean_diff=round(float(diff.float().mean()), 5),
                       pixels_differing=round(float((diff > 0).float().mean()), 5))
        out[backend] = row
    return out


def run(cases: tuple[str, ...] = CASES, *, ckpt: str | None = None, root: str | None = None,
        device: str | None = None, n_per_class: int = 40) -> dict[str, Any]:
    from ijepa_eval.data import eval_transform, get_dataset
    from ijepa_eval.data.clevr_mini import render_clevr_mini
    from ijepa_eval.data.synthetic import write_imagenet_like
    from ijepa_eval.encoders import load_encoder

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    results: dict[str, Any] = {"device": str(dev)}
    with tempfile.TemporaryDirectory(prefix="decode-equivalence-") as tmp:
        tmp = Path(tmp)
        for case in cases:
            if case in ("imagenet_like", "imagenet"):
                name, split_names = "imagenet", {"train": "train", "test": "val"}
                data = Path(root) if root else write_imagenet_like(tmp / "in", n_classes=10, n_train_per_class=n_per_class,
                                                                   n_val_per_class=n_per_class)
                encoder = load_encoder(ckpt or "random:vit_small_patch16_224")
            else:
                name, split_names = "clevr_count", {"train": "train", "test": "test"}
                size = 64 if case == "demo" else 128
                data = render_clevr_mini(tmp / f"clevr{size}", 10 * n_per_class, 10 * n_per_class, size=size, seed=1,
                                         progress=False)
                encoder = load_encoder(ckpt or "random:vit_tiny_patch16_224", img_size=64 if case == "demo" else None)
            encoder.to(dev).eval()
            transform = eval_transform(name, encoder.img_size, normalize=False)

            def make_dataset(split: str, decode: str, tf: Any, name: str = name, data: Path = data,
                             splits: dict = split_names) -> Any:
                return get_dataset(name, data, splits[split], decode=decode, transform=tf)

            results[case] = {"encoder": ckpt or "random init", "img_size": encoder.img_size,
                             **compare(encoder, make_dataset, transform, dev)}
            print(case, json.dumps(results[case]), flush=True)
    return results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of {','.join(CASES)} "
                        "('imagenet' with --root)")
    parser.add_argument("--ckpt", default=None, help="encoder checkpoint (default: random-init ViT-S/16, ViT-Ti/16)")
    parser.add_argument("--root", default=None, help="an ImageNet-layout folder for the imagenet case")
    parser.add_argument("--device", default=None)
    parser.add_argument("--n-per-class", type=int, default=40, help="generated images per class and split")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    result = run(tuple(args.cases.split(",")), ckpt=args.ckpt, root=args.root, device=args.device,
                 n_per_class=args.n_per_class)
    if args.out:
        from ijepa_eval.io import atomic_write_json

        atomic_write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
