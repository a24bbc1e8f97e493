"""CLEVR v1.0 counting and closest-object-distance tasks with the VTAB labels and splits.

Layout: ``<root>/scenes/CLEVR_{train,val}_scenes.json`` and ``<root>/images/{train,val}/<image_filename>``.

VTAB splits (task_adaptation ``data/clevr.py``): train = TFDS ``train[:90%]``, val = ``train[90%:]``
(90% = 90·N // 100), trainval = all of TFDS ``train`` (what VISSL trains on), test = TFDS ``validation``
(CLEVR val). The TFDS ``clevr`` builder keys each record
by its file name and stores a split sorted by the md5 of the split name followed by the key (TFDS
``core/hashing.py`` Hasher(salt=split) and ``core/shuffle.py``), so VTAB's val is a hash-defined 10% of
CLEVR train, not its last 7,000 images by index.
"""

from __future__ import annotations

import bisect
import hashlib
import json
from pathlib import Path

from ijepa_eval.data.base import FileImageDataset
from ijepa_eval.errors import DatasetError
from ijepa_eval.io import sha256_file

# VTAB: label = index of the first threshold the closest object's camera depth does not exceed.
DIST_THRESHOLDS = (8.0, 8.5, 9.0, 9.5, 10.0, 100.0)
MIN_OBJECTS, MAX_OBJECTS = 3, 10
TRAIN_PERCENT = 90  # VTAB TRAIN_SPLIT_PERCENT
SPLITS = ("train", "val", "trainval", "test")
TFDS_SALT = "train"  # the TFDS split the VTAB train/val slices are cut from
NUM_CLASSES = {"clevr_count": MAX_OBJECTS - MIN_OBJECTS + 1, "clevr_dist": len(DIST_THRESHOLDS)}


def count_label(scene: dict) -> int:
    return len(scene["objects"]) - MIN_OBJECTS


def dist_label(scene: dict) -> int:
    return bisect.bisect_left(DIST_THRESHOLDS, min(o["pixel_coords"][2] for o in scene["objects"]))


def find_clevr_root(root: Path) -> Path:
    """Accept CLEVR_v1.0 itself or a folder holding it."""
    for path in (root, root / "CLEVR_v1.0"):
        if (path / "scenes").is_dir():
            return path
    raise DatasetError(f"no CLEVR scenes under {root}; expected {root}/scenes/CLEVR_{{train,val}}_scenes.json")


def load_scenes(path: Path, pixel_coords: bool = True) -> list[dict]:
    """Scenes in image order; ``pixel_coords``: every object must carry them (clevr_dist reads the depth)."""
    try:
        scenes = json.loads(path.read_text())["scenes"]
    except FileNotFoundError:
        raise DatasetError(f"CLEVR scenes file {path} is missing; download CLEVR_v1.0 (with scenes)") from None
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as err:
        raise DatasetError(f"CLEVR scenes file {path} is malformed ({err}); re-download it") from None
    check_scenes(scenes, path, pixel_coords)
    return sorted(scenes, key=lambda s: s["image_index"])


def tfds_order(keys: list[str], salt: str = TFDS_SALT) -> list[int]:
    """Positions of ``keys`` in TFDS record order: ascending int(md5(salt + key)) (hashes are distinct)."""
    seed = hashlib.md5(salt.encode())

    def hkey(key: str) -> int:
        md5 = seed.copy()
        md5.update(key.encode())
        return int(md5.hexdigest(), 16)

    return sorted(range(len(keys)), key=lambda i: hkey(keys[i]))


def vtab_train_val(file_names: list[str]) -> tuple[list[int], list[int]]:
    """(train, val) positions in CLEVR train's file-name list: the first 90% / the rest in TFDS order."""
    order = tfds_order(file_names)
    cut = TRAIN_PERCENT * len(order) // 100
    return order[:cut], order[cut:]


def check_scenes(scenes: object, path: Path, pixel_coords: bool = True) -> None:
    """The structure labels are read from: a string or a dict for ``objects`` would still have a len().
    Object fields are checked only where a label reads them (``pixel_coords`` for clevr_dist)."""
    def bad(where: str, what: str) -> DatasetError:
        return DatasetError(f"CLEVR scenes file {path}: {where} {what}; re-download it")

    if not isinstance(scenes, list):
        raise bad("'scenes'", f"is a {type(scenes).__name__}, not a list")
    for i, scene in enumerate(scenes):
        if not isinstance(scene, dict):
            raise bad(f"scene {i}", f"is a {type(scene).__name__}, not an object")
        name, objects = scene.get("image_filename"), scene.get("objects")
        if not isinstance(scene.get("image_index"), int) or not isinstance(name, str) or Path(name).name != name:
            raise bad(f"scene {i}", "lacks an integer image_index or a plain image_filename")
        if not isinstance(objects, list) or not all(isinstance(o, dict) for o in objects):
            raise bad(f"scene {i} ('{name}')", f"has 'objects' of type {type(objects).__name__}, not a list of objects")
        for o in objects if pixel_coords else ():
            coords = o.get("pixel_coords")
            if not (isinstance(coords, list) and len(coords) == 3
                    and all(isinstance(c, int | float) and not isinstance(c, bool) for c in coords)):
                raise bad(f"scene {i} ('{name}')", "has an object without pixel_coords [x, y, depth]")


def clevr(name: str, root: Path, split: str, **kwargs) -> FileImageDataset:
    root = find_clevr_root(root)
    clevr_split = "val" if split == "test" else "train"
    scenes_path = root / "scenes" / f"CLEVR_{clevr_split}_scenes.json"
    scenes = load_scenes(scenes_path, pixel_coords=name == "clevr_dist")
    if clevr_split == "train":
        train, val = vtab_train_val([s["image_filename"] for s in scenes])  # check_scenes: every one is a str
        scenes = [scenes[i] for i in {"train": train, "val": val, "trainval": train + val}[split]]
    label_fn = count_label if name == "clevr_count" else dist_label
    try:
        labels = [label_fn(s) for s in scenes]
        files = [f"images/{clevr_split}/{s['image_filename']}" for s in scenes]
    except (KeyError, IndexError, TypeError, ValueError) as err:
        raise DatasetError(f"CLEVR scenes file {scenes_path} lacks object fields ({err}); re-download it") from None
    return FileImageDataset(
        name=name, split=split, root=root, files=files, labels=labels, num_classes=NUM_CLASSES[name],
        label_source=f"scenes:{sha256_file(scenes_path)}", **kwargs,
    )
