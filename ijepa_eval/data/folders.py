"""Class-folder datasets: ``<root>/<split>/<class>/<image>`` (ImageNet, ImageFolder, Places205 folders)."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from ijepa_eval.data.base import IMAGE_EXTENSIONS, FileImageDataset
from ijepa_eval.errors import DatasetError

WNID = re.compile(r"^n\d{8}$")


def list_classes(split_dir: Path) -> list[str]:
    """Sorted sub-folder names (class order = sorted order, as torchvision's ImageFolder)."""
    if not split_dir.is_dir():
        raise DatasetError(f"split folder {split_dir} does not exist; expected <root>/<split>/<class>/<image>")
    classes = sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise DatasetError(f"{split_dir} has no class sub-folders; expected <root>/<split>/<class>/<image>")
    return classes


def scan_class_folders(split_dir: Path, classes: list[str]) -> tuple[list[str], list[int]]:
    """Image files (relative to split_dir's parent) and labels, in class order then file-name order."""
    if not split_dir.is_dir():
        raise DatasetError(f"split folder {split_dir} does not exist; expected <root>/<split>/<class>/<image>")
    files, labels = [], []
    index = {c: i for i, c in enumerate(classes)}
    entries = list(os.scandir(split_dir))
    if not any(e.is_dir() for e in entries) and any(e.name.lower().endswith(IMAGE_EXTENSIONS) for e in entries):
        raise DatasetError(
            f"images lie directly in {split_dir}; sort them into <class>/ sub-folders "
            "(for ImageNet val, e.g. with the widely used valprep.sh)"
        )
    for cls in sorted(e.name for e in entries if e.is_dir() and not e.name.startswith(".")):
        if cls not in index:
            raise DatasetError(
                f"class folder {split_dir / cls} is not among the {len(classes)} training classes; "
                "train and val must use the same class folders"
            )
        names = sorted(
            e.name for e in os.scandir(split_dir / cls) if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS)
        )
        files.extend(f"{split_dir.name}/{cls}/{n}" for n in names)
        labels.extend([index[cls]] * len(names))
    return files, labels


def class_folder_dataset(name: str, root: Path, split: str, *, class_split: str = "train", **kwargs) -> FileImageDataset:
    """Classes come from ``class_split`` (train) so every split shares one label space."""
    classes = list_classes(root / class_split) if (root / class_split).is_dir() else list_classes(root / split)
    files, labels = scan_class_folders(root / split, classes)
    digest = hashlib.sha256("\n".join(classes).encode()).hexdigest()
    return FileImageDataset(
        name=name, split=split, root=root, files=files, labels=labels, num_classes=len(classes),
        classes=classes, label_source=f"classes:{digest}", **kwargs,
    )


def imagenet(root: Path, split: str, **kwargs) -> FileImageDataset:
    ds = class_folder_dataset("imagenet", root, split, **kwargs)
    bad = [c for c in ds.classes if not WNID.match(c)]
    if bad:
        raise DatasetError(
            f"{root / 'train'} has non-WordNet class folders (e.g. '{bad[0]}'); ImageNet expects nXXXXXXXX "
            "folders under train/ and val/ (use dataset 'folder' for other layouts)"
        )
    return ds


def folder(root: Path, split: str, **kwargs) -> FileImageDataset:
    return class_folder_dataset("folder", root, split, **kwargs)
