"""SimCLR ImageNet subsets (1% / 10% of train), read from the official split files.

Each line names one train image, ``n01558993_4751.JPEG``; its class is the prefix before ``_`` and the file
lives at ``train/<wnid>/<file>``. The files are pinned by sha256 so that two runs calling themselves
"1%" evaluated on the same images.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ijepa_eval.data.base import FileImageDataset
from ijepa_eval.data.folders import WNID, list_classes
from ijepa_eval.errors import DatasetError

SPLIT_FILES = {"imagenet_1pct": "1percent.txt", "imagenet_10pct": "10percent.txt"}
OFFICIAL_SHA256 = {
    "1percent.txt": "71e82a48ba78252683ae334c4d019ebd5c6e855b9599c1389fbe83eb9549cf17",
    "10percent.txt": "6d09de11e7bdaf5b1f3b1f249b6183695f97310cdd20f0c03e7235b6b9392091",
}


def find_split_file(name: str, root: Path, split_file: str | os.PathLike | None) -> Path:
    if split_file is not None:
        path = Path(split_file).expanduser()
        if not path.is_file():
            raise DatasetError(f"split file {path} does not exist; check split_file=")
        return path
    fname = SPLIT_FILES[name]
    candidates = [root / fname, root / "imagenet_subsets" / fname]
    for path in candidates:
        if path.is_file():
            return path
    raise DatasetError(
        f"no SimCLR split file for '{name}'; looked at {', '.join(map(str, candidates))}. Download {fname} "
        "(github.com/google-research/simclr/tree/master/imagenet_subsets) there or pass split_file=PATH"
    )


def read_split_file(path: Path) -> tuple[list[str], list[str]]:
    """(file names, wnids) in file order; a DatasetError on a line that is not ``nXXXXXXXX_<id>.<ext>``."""
    names, wnids = [], []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        wnid = line.split("_", 1)[0]
        if not WNID.match(wnid) or "/" in line:
            raise DatasetError(f"{path}:{lineno}: '{line}' is not a SimCLR split entry like n01558993_4751.JPEG")
        names.append(line)
        wnids.append(wnid)
    if not names:
        raise DatasetError(f"split file {path} is empty")
    return names, wnids


def split_info(name: str, path: Path) -> dict:
    """Hash and provenance of a split file, recorded in the dataset (and from there in results)."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    official = OFFICIAL_SHA256[SPLIT_FILES[name]]
    return {"split_file": str(path), "split_sha256": digest, "official": digest == official}


def imagenet_subset(
    name: str,
    root: Path,
    split: str,
    *,
    split_file: str | os.PathLike | None = None,
    allow_custom_split: bool = False,
    **kwargs,
) -> FileImageDataset:
    """Train = the split file's images; val = all of ImageNet val. Labels index all train wnids (sorted)."""
    from ijepa_eval.data.folders import imagenet

    path = find_split_file(name, root, split_file)
    info = split_info(name, path)
    if not info["official"] and not allow_custom_split:
        raise DatasetError(
            f"split file {path} has sha256 {info['split_sha256'][:12]}..., not the official SimCLR "
            f"{SPLIT_FILES[name]}; use the official file or pass allow_custom_split=True (on the command line: "
            "dataset.options.allow_custom_split=true)"
        )
    if split != "train":
        ds = imagenet(root, split, **kwargs)
        ds.name = name
    else:
        classes = list_classes(root / "train")
        index = {c: i for i, c in enumerate(classes)}
        names, wnids = read_split_file(path)
        unknown = sorted(set(wnids) - index.keys())
        if unknown:
            raise DatasetError(
                f"split file {path} names {len(unknown)} classes missing from {root / 'train'} "
                f"(e.g. {', '.join(unknown[:3])}); is the root an ImageNet-1k train/ val/ tree?"
            )
        files = [f"train/{w}/{n}" for w, n in zip(wnids, names, strict=True)]
        missing = [f for f in files if not (root / f).is_file()]
        if missing:
            raise DatasetError(
                f"{len(missing)} of {len(files)} images named in {path.name} are missing under {root} "
                f"(first: {', '.join(missing[:3])}); the ImageNet train copy is incomplete"
            )
        ds = FileImageDataset(
            name=name, split=split, root=root, files=files, labels=[index[w] for w in wnids],
            num_classes=len(classes), classes=classes,
            label_source=f"split:{info['split_sha256']}", **kwargs,
        )
    ds.split_info = info
    return ds
