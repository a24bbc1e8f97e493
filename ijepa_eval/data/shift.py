"""ImageNet distribution-shift test sets in their released layouts, labelled in the head's class space.

Every loader takes ``classes``: the label space of the head that will be evaluated (default: the 1000
ImageNet-1k wnids, sorted, the class order of ImageNet's ``train/`` folders). Labels are indices into it,
so one head's logits score every set. The layout is checked completely before anything is decoded: a
missing or foreign class folder, a -C corruption without its severity folders, an empty class folder is a
DatasetError naming the path and the layout expected.

=================  ========================================================  ================================
dataset / split    layout under the root (the released archive's folder)     label convention
=================  ========================================================  ================================
imagenet_v2        ``imagenetv2-<variant>-format-val/<k>/<sha1>.jpeg``,      folder ``k`` = class index ``k``,
/ matched-         k = 0 … 999 (HF ``vaishaal/ImageNetV2`` tarballs; or the  read as a number (torchvision's
frequency,         variant folder itself; or wnid folders, the older S3      ImageFolder sorts '0','1','10',
threshold-0.7,     ``imagenet-<variant>-format-val`` release)                '100', …: 988 of 1000 wrong)
top-images
imagenet_a / test  ``imagenet-a/<wnid>/*.jpg``, the 200 wnids of ImageNet-A  the head's index of the wnid;
imagenet_r / test  ``imagenet-r/<wnid>/*.jpg``, the 200 wnids of ImageNet-R  ``allowed_classes`` = the 200
imagenet_sketch    ``sketch/<wnid>/*.JPEG``, 1000 wnids; or ``hf:<id|path>`` the head's index of the wnid; HF:
/ test             (HF ``songweig/imagenet_sketch``, split train)            label = ImageNet-1k index
imagenet_c /       ``<corruption>/<severity>/<wnid>/*.JPEG`` (also under     the head's index of the wnid
<corruption>/<s>   ``<group>/`` = noise|blur|weather|digital|extra)
=================  ========================================================  ================================
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ijepa_eval.data.base import IMAGE_EXTENSIONS, FileImageDataset, ImageDataset
from ijepa_eval.data.imagenet_tables import (
    CORRUPTION_GROUPS,
    CORRUPTIONS,
    EXTRA_CORRUPTIONS,
    SEVERITIES,
    imagenet1k_wnids,
    imagenet_a_wnids,
    imagenet_r_wnids,
    subset_indices,
)
from ijepa_eval.errors import DatasetError

WNID = re.compile(r"^n\d{8}$")
V2_VARIANTS = {  # split -> folder names of the variant, newest release first
    "matched-frequency": ("imagenetv2-matched-frequency-format-val", "imagenet-matched-frequency-format-val",
                          "ImageNetV2-matched-frequency"),
    "threshold-0.7": ("imagenetv2-threshold0.7-format-val", "imagenet-threshold-0.7-format-val",
                      "ImageNetV2-threshold-0.7"),
    "top-images": ("imagenetv2-top-images-format-val", "imagenet-top-images-format-val", "ImageNetV2-top-images"),
}
C_SPLITS = tuple(f"{c}/{s}" for c in (*CORRUPTIONS, *EXTRA_CORRUPTIONS) for s in SEVERITIES)
SUBSETS = {"imagenet_a": ("ImageNet-A", ("imagenet-a",), imagenet_a_wnids),
           "imagenet_r": ("ImageNet-R", ("imagenet-r",), imagenet_r_wnids)}
SKETCH_FOLDERS = ("sketch", "imagenet-sketch", "ImageNet-Sketch")
HF_SKETCH_SPLIT = "train"  # the only split of the HF copy


def _subdirs(path: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))


def _base(root: Path, candidates: Sequence[str]) -> Path:
    """The released archive's folder under ``root`` when present, else ``root`` itself."""
    for name in candidates:
        if (root / name).is_dir():
            return root / name
    return root


def _check_folders(base: Path, expected: Sequence[str], what: str, layout: str) -> None:
    """The class folders under ``base`` are exactly ``expected``: one line naming the first stray or missing one."""
    if not base.is_dir():
        raise DatasetError(f"{what} folder {base} does not exist; expected {layout}")
    found = set(_subdirs(base))
    wanted = set(expected)
    stray = sorted(found - wanted)
    if stray:
        raise DatasetError(f"{base / stray[0]} is not a class folder of {what}; expected {layout}")
    missing = sorted(wanted - found)
    if missing:
        raise DatasetError(f"{base} lacks {len(missing)} of the {len(wanted)} class folders of {what} "
                           f"(e.g. {missing[0]}); expected {layout}")


def _files(root: Path, base: Path, folder_labels: dict[str, int], what: str) -> tuple[list[str], list[int]]:
    """Image files (relative to ``root``) and labels, in label order then file-name order."""
    files, labels = [], []
    for folder, label in sorted(folder_labels.items(), key=lambda item: (item[1], item[0])):
        names = sorted(e.name for e in os.scandir(base / folder)
                       if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS))
        if not names:
            raise DatasetError(f"class folder {base / folder} of {what} holds no images; re-extract the archive")
        rel = (base / folder).relative_to(root)
        files.extend(f"{rel}/{n}" for n in names)
        labels.extend([label] * len(names))
    return files, labels


def _classes(classes: Sequence[str] | None) -> list[str]:
    classes = list(classes) if classes is not None else list(imagenet1k_wnids())
    if len(set(classes)) != len(classes) or not classes:
        raise DatasetError(f"the head's classes must be distinct names, got {len(classes)} with duplicates")
    return classes


def _dataset(name: str, split: str, root: Path, files: list[str], labels: list[int], classes: list[str],
             convention: str, allowed: list[int] | None = None, **kwargs) -> FileImageDataset:
    digest = hashlib.sha256("\n".join([convention, *classes, *map(str, allowed or [])]).encode()).hexdigest()
    ds = FileImageDataset(name=name, split=split, root=root, files=files, labels=labels, num_classes=len(classes),
                          classes=classes, label_source=f"{convention}:{digest}", **kwargs)
    ds.label_convention = convention
    ds.allowed_classes = None if allowed is None else np.asarray(allowed, dtype=np.int64)
    return ds


def imagenet_v2(root: Path, split: str, *, classes: Sequence[str] | None = None, **kwargs) -> FileImageDataset:
    """One ImageNetV2 variant; class-index folders are read as numbers, wnid folders by the head's classes."""
    classes = _classes(classes)
    n = len(classes)
    base = _base(root, V2_VARIANTS[split])
    layout = (f"<root>/{V2_VARIANTS[split][0]}/<k>/*.jpeg with one folder per class index k = 0 … {n - 1} "
              "(or the variant folder itself as the root)")
    if not base.is_dir():
        raise DatasetError(f"ImageNetV2 root {base} does not exist; expected {layout}")
    folders = _subdirs(base)
    if folders and all(WNID.match(f) for f in folders):
        convention = "wnid folders, labelled by the head's classes"
        folder_labels = {w: i for i, w in enumerate(classes)}
    else:
        convention = "class-index folders 0..N-1, read as numbers"
        folder_labels = {str(i): i for i in range(n)}
    _check_folders(base, list(folder_labels), f"ImageNetV2 {split}", layout)
    files, labels = _files(root, base, folder_labels, f"ImageNetV2 {split}")
    return _dataset("imagenet_v2", split, root, files, labels, classes, convention, **kwargs)


def imagenet_subset(name: str, root: Path, split: str, *, classes: Sequence[str] | None = None,
                    subset: Sequence[str] | None = None, **kwargs) -> FileImageDataset:
    """ImageNet-A / -R: 200 wnid folders; ``allowed_classes`` = their indices in the head's classes.

    ``subset`` None: the set's official 200 wnids for a head over ImageNet-1k (all 200 must be there); for a
    head over other classes (a synthetic twin) the wnid folders present, each one of the head's classes.
    """
    what, folders, default = SUBSETS[name]
    classes = _classes(classes)
    base = _base(root, folders)
    layout = f"<root>/{folders[0]}/<wnid>/<image>, one folder per class of {what} (200 wnids)"
    if subset is None:
        subset = default() if set(default()) <= set(classes) else (_subdirs(base) if base.is_dir() else [])
    subset = sorted(subset)
    if not subset:
        raise DatasetError(f"{what} folder {base} holds no class folders; expected {layout}")
    allowed = subset_indices(subset, classes, what)
    _check_folders(base, subset, what, layout)
    index = {c: i for i, c in enumerate(classes)}
    files, labels = _files(root, base, {w: index[w] for w in subset}, what)
    return _dataset(name, split, root, files, labels, classes, f"{len(subset)} wnid folders of {what}", allowed,
                    **kwargs)


def imagenet_sketch(root: Path | str, split: str, *, classes: Sequence[str] | None = None,
                    **kwargs) -> ImageDataset:
    """1000 wnid folders (the released zip's ``sketch/``), or the HF copy through ``hf:<id or path>``."""
    classes = _classes(classes)
    if str(root).startswith("hf:"):
        return _hf_sketch(str(root)[3:], split, classes, **kwargs)
    root = Path(root)
    base = _base(root, SKETCH_FOLDERS)
    layout = f"<root>/sketch/<wnid>/*.JPEG for the {len(classes)} classes of the head"
    _check_folders(base, classes, "ImageNet-Sketch", layout)
    files, labels = _files(root, base, {w: i for i, w in enumerate(classes)}, "ImageNet-Sketch")
    return _dataset("imagenet_sketch", split, root, files, labels, classes, "wnid folders", **kwargs)


def _hf_sketch(source: str, split: str, classes: list[str], **kwargs) -> ImageDataset:
    """HF ``imagenet_sketch``: ClassLabel names are class *names* in ImageNet-1k index order; label = that index."""
    from ijepa_eval.data.hf import hf

    ds = hf(source, HF_SKETCH_SPLIT, **kwargs)
    names = ds.classes or []
    if ds.num_classes != len(classes):
        raise DatasetError(f"HF dataset '{source}' has {ds.num_classes} classes, the head {len(classes)}; "
                           "ImageNet-Sketch's labels are ImageNet-1k class indices (1000)")
    if names and all(WNID.match(str(n)) for n in names) and list(names) != classes:
        raise DatasetError(f"HF dataset '{source}' names its classes by wnid in another order than the head; "
                           "labels would be wrong")
    ds.name, ds.split, ds.classes = "imagenet_sketch", split, classes
    ds.label_convention = "HF label = ImageNet-1k class index"
    ds.allowed_classes = None
    return ds


def corruption_dir(root: Path, corruption: str) -> Path:
    """``<root>/<corruption>`` or ``<root>/<group>/<corruption>`` (one folder per release tarball)."""
    group = next(g for g, names in CORRUPTION_GROUPS.items() if corruption in names)
    for path in (root / corruption, root / group / corruption):
        if path.is_dir():
            return path
    raise DatasetError(f"no ImageNet-C corruption folder {root / corruption} (nor {root / group / corruption}); "
                       "expected <root>/<corruption>/<severity 1-5>/<wnid>/*.JPEG")


def check_severities(folder: Path) -> None:
    """A corruption folder holds exactly the severity folders 1 … 5."""
    found = _subdirs(folder)
    if found != [str(s) for s in SEVERITIES]:
        shown = ", ".join(found[:3]) + (", …" if len(found) > 3 else "") if found else "nothing"
        raise DatasetError(f"ImageNet-C folder {folder} holds {shown}, not the severity folders 1 … 5; "
                           f"expected {folder}/<severity 1-5>/<wnid>/*.JPEG")


def imagenet_c(root: Path, split: str, *, classes: Sequence[str] | None = None, **kwargs) -> FileImageDataset:
    """One corruption at one severity: ``split`` = ``<corruption>/<severity>``, e.g. ``gaussian_noise/3``."""
    classes = _classes(classes)
    corruption, severity = split.split("/")
    folder = corruption_dir(root, corruption)
    check_severities(folder)
    base = folder / severity
    layout = f"{base}/<wnid>/*.JPEG for the {len(classes)} classes of the head"
    _check_folders(base, classes, f"ImageNet-C {split}", layout)
    files, labels = _files(root, base, {w: i for i, w in enumerate(classes)}, f"ImageNet-C {split}")
    return _dataset("imagenet_c", split, root, files, labels, classes, "wnid folders", **kwargs)
