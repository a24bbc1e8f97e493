"""ReaL: the reassessed ImageNet validation labels (Beyer et al. 2020, google-research/reassessed-imagenet).

``real.json`` is a list of 50,000 lists of class indices, one per ILSVRC2012 validation image in file-name
order: entry ``i`` belongs to ``ILSVRC2012_val_{i + 1:08d}.JPEG``. An empty list marks an image the raters
found no fitting label for; it is excluded from the evaluation (3,163 images in the released file). ReaL
top-k = share of the remaining images with one of the k best predictions in the image's list (the
reference README's NumPy example for k = 1; timm's ``RealLabelsImagenet`` for k = 5).

ReaL relabels the ImageNet val images, so it reuses the ImageNet val features: labels are looked up by the
file name of each val image, whatever order the val folder lists them in.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ijepa_eval.errors import DatasetError
from ijepa_eval.io import sha256_file

REAL_FILE = "real.json"
VAL_IMAGES = 50_000  # ILSVRC2012 val: ILSVRC2012_val_00000001.JPEG … ILSVRC2012_val_00050000.JPEG
VAL_NAME = re.compile(r"^ILSVRC2012_val_(\d{8})\.[A-Za-z]+$")


def find_real_file(root: str | os.PathLike) -> Path:
    """``root`` is ``real.json`` itself or a folder holding it."""
    path = Path(root).expanduser()
    path = path / REAL_FILE if path.is_dir() else path
    if not path.is_file():
        raise DatasetError(f"ReaL labels {path} do not exist; download real.json from "
                           "github.com/google-research/reassessed-imagenet and pass its path or folder")
    return path


def read_real(path: str | os.PathLike, num_classes: int = 1000) -> list[list[int]]:
    """The 50,000 label lists, checked: a list of lists of distinct class indices in [0, num_classes)."""
    path = Path(path)
    layout = f"a JSON list of {VAL_IMAGES} lists of class indices, one per ILSVRC2012_val image in file order"
    try:
        labels = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetError(f"ReaL file {path} is not JSON ({err}); expected {layout}") from None
    if not isinstance(labels, list) or len(labels) != VAL_IMAGES:
        size = f"{len(labels)} entries" if isinstance(labels, list) else f"a {type(labels).__name__}"
        raise DatasetError(f"ReaL file {path} holds {size}; expected {layout}")
    for i, entry in enumerate(labels):
        ok = isinstance(entry, list) and all(isinstance(c, int) and not isinstance(c, bool) for c in entry)
        if not ok or len(set(entry)) != len(entry) or any(not 0 <= c < num_classes for c in entry):
            raise DatasetError(f"ReaL file {path}: entry {i} (ILSVRC2012_val_{i + 1:08d}) is {entry!r}, not a list "
                               f"of distinct class indices in [0, {num_classes - 1}]; expected {layout}")
    return labels


def real_labels_for(files: Sequence[str], labels: list[list[int]]) -> np.ndarray:
    """[N, L] int64 ReaL label lists of the val images ``files`` (paths ending in the val file name), -1 padded.

    A row of -1 is an image ReaL excludes. A file name that is not ``ILSVRC2012_val_XXXXXXXX`` is an error:
    without it the image cannot be matched to its entry.
    """
    rows = []
    for f in files:
        match = VAL_NAME.match(Path(f).name)
        if not match or not 1 <= int(match.group(1)) <= VAL_IMAGES:
            raise DatasetError(f"ImageNet val image {f} is not named ILSVRC2012_val_XXXXXXXX.JPEG (1 … {VAL_IMAGES}); "
                               "ReaL matches its labels to val images by these file names")
        rows.append(labels[int(match.group(1)) - 1])
    out = np.full((len(rows), max((len(r) for r in rows), default=0) or 1), -1, dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def load_real(root: str | os.PathLike, files: Sequence[str], num_classes: int = 1000) -> tuple[np.ndarray, dict]:
    """(label matrix for ``files``, provenance {file, sha256, n_empty}) in one call."""
    path = find_real_file(root)
    labels = read_real(path, num_classes)
    info = {"file": str(path), "sha256": sha256_file(path), "n_empty": sum(1 for entry in labels if not entry)}
    return real_labels_for(files, labels), info
