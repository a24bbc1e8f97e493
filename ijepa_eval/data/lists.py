"""Datasets whose labels come from list/annotation files: Places205 (CSV lists) and iNaturalist 2018 (COCO JSON)."""

from __future__ import annotations

import json
from pathlib import Path

from ijepa_eval.data.base import FileImageDataset
from ijepa_eval.data.folders import class_folder_dataset
from ijepa_eval.errors import DatasetError
from ijepa_eval.io import sha256_file

PLACES_CLASSES = 205
PLACES_LISTS = "trainvalsplit_places205"
PLACES_IMAGES = "data/vision/torralba/deeplearning/images256"
INAT_CLASSES = 8142


def check_some_files_exist(root: Path, files: list[str], what: str, n_checks: int = 64) -> None:
    """Stat an evenly spaced sample: catches a wrong root at once without stat-ing millions of files."""
    step = max(1, len(files) // n_checks)
    missing = [f for f in files[::step] if not (root / f).is_file()]
    if missing:
        raise DatasetError(
            f"{what} names images missing under {root} (e.g. {missing[0]}, {len(missing)} of "
            f"{len(files[::step])} sampled); check the root or finish extracting the images"
        )


def places205(root: Path, split: str, **kwargs) -> FileImageDataset:
    """List files ``trainvalsplit_places205/{train,val}_places205.csv`` (``<relpath> <label>``), else folders."""
    list_file = root / PLACES_LISTS / f"{split}_places205.csv"
    if not list_file.is_file():
        if (root / split).is_dir():
            ds = class_folder_dataset("places205", root, split, **kwargs)
            return ds
        raise DatasetError(
            f"no Places205 list {list_file} and no {root / split}/<class>/ folders; point the root at the "
            f"folder holding {PLACES_LISTS}/ and {PLACES_IMAGES}/"
        )
    files, labels = [], []
    for lineno, line in enumerate(list_file.read_text().splitlines(), 1):
        if not line.strip():
            continue
        rel, _, label = line.strip().rpartition(" ")
        if not rel or not label.lstrip("-").isdigit():
            raise DatasetError(f"{list_file}:{lineno}: '{line}' is not '<relative path> <label>'")
        files.append(f"{PLACES_IMAGES}/{rel}")
        labels.append(int(label))
    if files:
        check_some_files_exist(root, files, str(list_file))
    return FileImageDataset(
        name="places205", split=split, root=root, files=files, labels=labels, num_classes=PLACES_CLASSES,
        label_source=f"list:{sha256_file(list_file)}", **kwargs,
    )


def inat18(root: Path, split: str, **kwargs) -> FileImageDataset:
    """COCO-style ``{split}2018.json``: images{id,file_name}, annotations{image_id,category_id}, categories."""
    ann_file = root / f"{split}2018.json"
    if not ann_file.is_file():
        raise DatasetError(f"no iNat18 annotation file {ann_file}; extract {split}2018.json.tar.gz into the root")
    try:
        ann = json.loads(ann_file.read_text())
        file_of = {img["id"]: img["file_name"] for img in ann["images"]}
        cat_ids = sorted(c["id"] for c in ann["categories"])
        pairs = sorted((a["image_id"], a["category_id"]) for a in ann["annotations"])
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise DatasetError(f"{ann_file} is not a COCO-style iNat18 annotation file ({err})") from None
    # Official ids are already 0..8141; mapping sorted ids keeps labels dense for any subset.
    index = {c: i for i, c in enumerate(cat_ids)}
    try:
        files = [file_of[image_id] for image_id, _ in pairs]
        labels = [index[cat] for _, cat in pairs]
    except KeyError as err:
        raise DatasetError(f"{ann_file} annotates unknown image or category id {err}") from None
    if files:
        check_some_files_exist(root, files, str(ann_file))
    return FileImageDataset(
        name="inat18", split=split, root=root, files=files, labels=labels, num_classes=len(cat_ids),
        label_source=f"annotations:{sha256_file(ann_file)}", **kwargs,
    )
