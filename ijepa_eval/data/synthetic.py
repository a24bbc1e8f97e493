"""Tiny datasets written in each dataset's true on-disk format, for tests and the demo.

Every image carries class-dependent signal (a per-class base colour and stripe frequency, plus noise), so
a probe on even random-init features can learn something; the exact pixels depend only on ``seed``.
"""

from __future__ import annotations

import io
import os
import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ijepa_eval.io import atomic_open, atomic_write_json, atomic_write_text


def class_image(label: int, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """An HxWx3 uint8 image whose colour and stripe frequency identify ``label``."""
    colour_rng = np.random.default_rng(1000 + label)
    base = colour_rng.uniform(40, 215, size=3)
    freq = 1 + label % 5
    stripes = np.sin(np.linspace(0, 2 * np.pi * freq, size))[None, :, None] * 30
    if (label // 5) % 2:
        stripes = stripes.transpose(1, 0, 2)
    img = base[None, None, :] + stripes + rng.normal(0, 12, size=(size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def photo_like(label: int, rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """An HxWx3 uint8 image with a photo's statistics: a 1/f colour field (natural images' spectrum, so the
    JPEG size and the resize's work are realistic), a few sharp-edged blobs, a little sensor noise; its
    tint and blob count follow ``label`` so a probe can learn the class."""
    fy, fx = np.fft.fftfreq(height)[:, None], np.fft.rfftfreq(width)[None, :]
    falloff = np.maximum(np.hypot(fx, fy), 1.0 / max(width, height)) ** 1.1
    field = np.stack([np.fft.irfft2((rng.normal(size=falloff.shape) + 1j * rng.normal(size=falloff.shape)) / falloff,
                                    s=(height, width)) for _ in range(3)], axis=-1)
    field = field @ (np.eye(3) + 0.3 * rng.normal(size=(3, 3)))  # correlated channels, as in photos
    tint = np.random.default_rng(2000 + label).uniform(60, 190, size=3)
    img = (field - field.mean()) / (field.std() + 1e-9) * 45 + tint
    yy, xx = np.mgrid[:height, :width]
    for _ in range(2 + label % 4 + int(rng.integers(0, 2))):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        rx, ry = rng.uniform(8, width / 3), rng.uniform(8, height / 3)
        blob = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 < 1
        img[blob] = 0.4 * img[blob] + 0.6 * rng.uniform(0, 255, size=3)
    img += rng.normal(0, 3, size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_imagenet_like(root: str | os.PathLike, n_classes: int = 4, n_train_per_class: int = 8,
                        n_val_per_class: int = 4, seed: int = 0, quality: int = 90) -> Path:
    """ImageNet's layout (``train/<wnid>/``, ``val/<wnid>/``) with ImageNet-like JPEGs: photo-like content,
    sizes drawn around ImageNet's mean (~400x350, sd ~60x50), 4:2:0 at ``quality``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for label, wnid in enumerate(wnids(n_classes)):
        for split, n in (("train", n_train_per_class), ("val", n_val_per_class)):
            for k in range(n):
                width, height = int(np.clip(rng.normal(400, 60), 200, 640)), int(np.clip(rng.normal(350, 50), 180, 560))
                path = root / split / wnid / f"{wnid}_{split}_{k}.JPEG"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(photo_like(label, rng, width, height)).save(path, "JPEG", quality=quality)
    return root


def wnids(n_classes: int) -> list[str]:
    """Plausible, sorted WordNet ids (n01440764 is ImageNet's first class)."""
    return [f"n{1440764 + 1000 * i:08d}" for i in range(n_classes)]


def _save(path: Path, array: np.ndarray, fmt: str = "JPEG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, fmt, **({"quality": 95} if fmt == "JPEG" else {}))


def write_imagenet(
    root: str | os.PathLike,
    n_classes: int = 4,
    n_train_per_class: int = 4,
    n_val_per_class: int = 2,
    size: int = 32,
    seed: int = 0,
    split_file_per_class: int | None = None,
) -> Path:
    """``train/<wnid>/<wnid>_<k>.JPEG`` and ``val/<wnid>/ILSVRC2012_val_<k>.JPEG``.

    With ``split_file_per_class`` also writes ``<root>/1percent.txt`` in SimCLR format naming that many
    train images per class (a custom split: its hash differs from the official file).
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    split_lines = []
    val_index = 1
    for label, wnid in enumerate(wnids(n_classes)):
        for k in range(n_train_per_class):
            name = f"{wnid}_{k + 1}.JPEG"
            _save(root / "train" / wnid / name, class_image(label, rng, size))
            if split_file_per_class is not None and k < split_file_per_class:
                split_lines.append(name)
        for _ in range(n_val_per_class):
            _save(root / "val" / wnid / f"ILSVRC2012_val_{val_index:08d}.JPEG", class_image(label, rng, size))
            val_index += 1
    if split_file_per_class is not None:
        atomic_write_text(root / "1percent.txt", "".join(f"{line}\n" for line in split_lines))
    return root


def write_cifar100(root: str | os.PathLike, n_train: int = 200, n_test: int = 100, seed: int = 0) -> Path:
    """``cifar-100-python/{train,test,meta}``: protocol-2 pickles with the original keys and layout."""
    folder = Path(root) / "cifar-100-python"
    rng = np.random.default_rng(seed)
    fine_names = [f"class_{i:02d}" for i in range(100)]
    for split, n in (("train", n_train), ("test", n_test)):
        fine = rng.integers(0, 100, size=n)
        images = np.stack([class_image(int(y), rng, 32) for y in fine]) if n else np.zeros((0, 32, 32, 3), np.uint8)
        batch = {
            "filenames": [f"synthetic_{i}.png" for i in range(n)],
            "batch_label": f"{split}ing batch 1 of 1",
            "fine_labels": [int(y) for y in fine],
            "coarse_labels": [int(y) // 5 for y in fine],
            # Rows are the R, G and B 32x32 planes one after another (channel-major), as in the original.
            "data": images.transpose(0, 3, 1, 2).reshape(n, 3072),
        }
        with atomic_open(folder / split, "wb") as f:
            pickle.dump(batch, f, protocol=2)
    meta = {"fine_label_names": fine_names, "coarse_label_names": [f"super_{i:02d}" for i in range(20)]}
    with atomic_open(folder / "meta", "wb") as f:
        pickle.dump(meta, f, protocol=2)
    return Path(root)


def write_places205(
    root: str | os.PathLike, n_classes: int = 4, n_train: int = 16, n_val: int = 8, size: int = 32, seed: int = 0
) -> Path:
    """``trainvalsplit_places205/{train,val}_places205.csv`` + ``data/vision/torralba/deeplearning/images256``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    classes = [f"{chr(ord('a') + i % 26)}/scene_{i:03d}" for i in range(n_classes)]
    images = root / "data/vision/torralba/deeplearning/images256"
    k = 0
    for split, n in (("train", n_train), ("val", n_val)):
        lines = []
        for i in range(n):
            label = i % n_classes
            rel = f"{classes[label]}/gsun_{k:032x}.jpg"
            _save(images / rel, class_image(label, rng, size))
            lines.append(f"{rel} {label}\n")
            k += 1
        atomic_write_text(root / "trainvalsplit_places205" / f"{split}_places205.csv", "".join(lines))
    return root


def write_inat18(
    root: str | os.PathLike, n_classes: int = 5, n_train: int = 20, n_val: int = 10, size: int = 32, seed: int = 0
) -> Path:
    """``{train,val}2018.json`` (COCO style) + ``train_val2018/<supercategory>/<category id>/<hash>.jpg``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    supers = ["Plantae", "Insecta", "Aves"]
    categories = [
        {"id": c, "name": f"Species {c}", "supercategory": supers[c % len(supers)], "kingdom": "Animalia"}
        for c in range(n_classes)
    ]
    image_id = 0
    for split, n in (("train", n_train), ("val", n_val)):
        images, annotations = [], []
        for i in range(n):
            cat = categories[i % n_classes]
            rel = f"train_val2018/{cat['supercategory']}/{cat['id']}/{rng.bytes(16).hex()}.jpg"
            _save(root / rel, class_image(cat["id"], rng, size))
            images.append({"id": image_id, "file_name": rel, "width": size, "height": size, "license": 0})
            annotations.append({"id": image_id, "image_id": image_id, "category_id": cat["id"]})
            image_id += 1
        info = {"year": 2018, "version": "1.0", "description": "synthetic iNat18 twin"}
        atomic_write_json(root / f"{split}2018.json",
                          {"info": info, "images": images, "annotations": annotations, "categories": categories})
    return root


def write_parquet(
    root: str | os.PathLike,
    n_classes: int = 3,
    n_per_split: Sequence[tuple[str, int]] = (("train", 12), ("validation", 6)),
    size: int = 32,
    seed: int = 0,
) -> Path:
    """HF hub layout ``data/<split>-00000-of-00001.parquet`` with an Image column and a ClassLabel column."""
    import datasets

    root = Path(root)
    rng = np.random.default_rng(seed)
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=[f"c{i}" for i in range(n_classes)])}
    )
    for split, n in n_per_split:
        images, labels = [], []
        for i in range(n):
            buf = io.BytesIO()
            Image.fromarray(class_image(i % n_classes, rng, size)).save(buf, "PNG")
            images.append({"bytes": buf.getvalue(), "path": None})
            labels.append(i % n_classes)
        table = datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)
        out = root / "data" / f"{split}-00000-of-00001.parquet"
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(out, "wb") as f:
            table.to_parquet(f)
    return root
