"""Shifted copies of a (synthetic) ImageNet val split, written in every shift set's released layout.

For tests and the demo: :func:`write_shift_twins` reads ``<imagenet>/val/<wnid>/*`` and writes, under one
folder laid out like ``$IJEPA_EVAL_DATA`` (so ``IJEPA_EVAL_DATA=<out>`` finds every set):

- ``imagenetv2/imagenetv2-<variant>-format-val/<class index>/<sha1>.jpeg``: three variants, re-noised copies;
- ``imagenet-real/real.json``: 50,000 entries; the val images' own label, a second label on every 7th,
  an empty list (excluded) on every 5th and on every number without a val image;
- ``imagenet-a/<wnid>/*.jpg`` (every other class, strong noise) and ``imagenet-r/<wnid>/*.jpg`` (the other
  classes, inverted colours), each with the release's ``README.txt`` beside the class folders;
- ``imagenet-sketch/sketch/<wnid>/sketch_<k>.JPEG``: grey edge maps;
- ``imagenet-c/<corruption>/<severity>/<wnid>/<val file name>``: the same images under every corruption.

The perturbations are simple stand-ins chosen by name family (noise, blur, weather, digital), stronger with
severity; they are not the ImageNet-C corruption functions, and the copies are not the real sets.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
from PIL import Image

from ijepa_eval.data.base import IMAGE_EXTENSIONS
from ijepa_eval.data.imagenet_tables import CORRUPTION_GROUPS, CORRUPTIONS, SEVERITIES
from ijepa_eval.data.real import VAL_IMAGES, VAL_NAME
from ijepa_eval.data.shift import V2_VARIANTS
from ijepa_eval.io import atomic_write_json, atomic_write_text

V2_NOISE = {"matched-frequency": 12.0, "threshold-0.7": 8.0, "top-images": 4.0}  # easier variant, less noise
README = "Synthetic twin written by ijepa_eval.data.synthetic_shift; the release ships a README.txt here too.\n"


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(array, 0, 255).astype(np.uint8)).save(path, "JPEG", quality=95)


def _noise(img: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    return img + rng.normal(0, sigma, img.shape)


def _edges(img: np.ndarray) -> np.ndarray:
    """A black-on-white edge map, grey like a pencil sketch."""
    grey = img.mean(-1)
    mag = np.hypot(*np.gradient(grey))
    sketch = 255 - np.clip(mag * 4, 0, 255)
    return np.repeat(sketch[..., None], 3, axis=-1)


def corrupt(img: np.ndarray, corruption: str, severity: int, rng: np.random.Generator) -> np.ndarray:
    """A stand-in corruption by the name's family, stronger with ``severity`` (1-5)."""
    group = next(g for g, names in CORRUPTION_GROUPS.items() if corruption in names)
    if group in ("noise", "extra"):
        return _noise(img, 10.0 * severity, rng)
    if group == "blur":
        out = img.astype(np.float64)
        for _ in range(severity):  # repeated 3x3 box blur
            padded = np.pad(out, ((1, 1), (1, 1), (0, 0)), mode="edge")
            out = sum(padded[i:i + img.shape[0], j:j + img.shape[1]] for i in range(3) for j in range(3)) / 9
        return out
    if group == "weather":  # fog / haze: blend towards white
        return img * (1 - 0.12 * severity) + 255 * 0.12 * severity
    mean = img.mean((0, 1), keepdims=True)  # digital: contrast loss
    return mean + (img - mean) * (1 - 0.15 * severity)


def _val_images(imagenet_root: Path) -> tuple[list[str], list[tuple[str, str, np.ndarray]]]:
    """(classes = sorted train folders, [(wnid, file name, HxWx3 array)] of val in folder then name order)."""
    classes = sorted(e.name for e in os.scandir(imagenet_root / "train") if e.is_dir())
    images = []
    for wnid in classes:
        folder = imagenet_root / "val" / wnid
        for name in sorted(os.listdir(folder)) if folder.is_dir() else []:
            if name.lower().endswith(IMAGE_EXTENSIONS):
                with Image.open(folder / name) as img:
                    images.append((wnid, name, np.asarray(img.convert("RGB"), dtype=np.float64)))
    return classes, images


def write_real(path: Path, val: list[tuple[str, str, np.ndarray]], classes: list[str]) -> Path:
    """``real.json`` for the val images named ILSVRC2012_val_XXXXXXXX; see the module docstring."""
    entries: list[list[int]] = [[] for _ in range(VAL_IMAGES)]
    for k, (wnid, name, _) in enumerate(val):
        match = VAL_NAME.match(name)
        if match is None or k % 5 == 4:
            continue
        label = classes.index(wnid)
        entries[int(match.group(1)) - 1] = [label, (label + 1) % len(classes)] if k % 7 == 3 else [label]
    atomic_write_json(path, entries)
    return path


def write_shift_twins(imagenet_root: str | os.PathLike, out: str | os.PathLike, *,
                      corruptions: tuple[str, ...] = CORRUPTIONS, seed: int = 0) -> dict[str, Path]:
    """Every shift set as a shifted copy of ``<imagenet_root>/val``; returns {dataset family: root}."""
    imagenet_root, out = Path(imagenet_root), Path(out)
    rng = np.random.default_rng(seed)
    classes, val = _val_images(imagenet_root)
    roots = {"imagenet_v2": out / "imagenetv2", "imagenet_real": out / "imagenet-real",
             "imagenet_a": out / "imagenet-a", "imagenet_r": out / "imagenet-r",
             "imagenet_sketch": out / "imagenet-sketch", "imagenet_c": out / "imagenet-c"}
    for variant, sigma in V2_NOISE.items():
        for wnid, _, img in val:
            noisy = np.clip(_noise(img, sigma, rng), 0, 255).astype(np.uint8)
            name = f"{hashlib.sha1(noisy.tobytes()).hexdigest()}.jpeg"  # the release names files by content hash
            _save(roots["imagenet_v2"] / V2_VARIANTS[variant][0] / str(classes.index(wnid)) / name, noisy)
    write_real(roots["imagenet_real"] / "real.json", val, classes)
    for family, keep, shift in (("imagenet_a", 0, lambda x: _noise(np.roll(x, 3, axis=1), 40.0, rng)),
                                ("imagenet_r", 1, lambda x: 255 - x)):
        for wnid, name, img in val:
            if classes.index(wnid) % 2 == keep:
                _save(roots[family] / wnid / f"{Path(name).stem}.jpg", shift(img))
        atomic_write_text(roots[family] / "README.txt", README)
    counts: dict[str, int] = {}
    for wnid, _, img in val:
        counts[wnid] = counts.get(wnid, 0) + 1
        _save(roots["imagenet_sketch"] / "sketch" / wnid / f"sketch_{counts[wnid] - 1}.JPEG", _edges(img))
    for corruption in corruptions:
        for severity in SEVERITIES:
            for wnid, name, img in val:
                _save(roots["imagenet_c"] / corruption / str(severity) / wnid / name,
                      corrupt(img, corruption, severity, rng))
    return roots
