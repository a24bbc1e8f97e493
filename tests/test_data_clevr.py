"""CLEVR-mini renderer and the CLEVR sources: layout, VTAB labels recomputed from the scenes JSON, splits."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ijepa_eval.data import get_dataset
from ijepa_eval.data.clevr_mini import CAMERA, LOOK_AT, render_clevr_mini
from ijepa_eval.errors import DatasetError

N_TRAIN, N_VAL, SIZE = 150, 20, 48


@pytest.fixture(scope="module")
def clevr_root(tmp_path_factory) -> Path:
    return render_clevr_mini(tmp_path_factory.mktemp("clevr"), N_TRAIN, N_VAL, size=SIZE, seed=3,
                             progress=False, workers=1)


def scenes(root: Path, split: str) -> list[dict]:
    return json.loads((root / "scenes" / f"CLEVR_{split}_scenes.json").read_text())["scenes"]


def vtab_dist(scene: dict) -> int:
    # VTAB: the largest i with thresholds[i] < closest depth, over [0, 8, 8.5, 9, 9.5, 10, 100]
    d = min(o["pixel_coords"][2] for o in scene["objects"])
    thrs = np.array([0.0, 8.0, 8.5, 9.0, 9.5, 10.0, 100.0])
    return int(np.flatnonzero(thrs < d).max())


def test_layout_matches_clevr_v1(clevr_root):
    for split, n in (("train", N_TRAIN), ("val", N_VAL)):
        sc = scenes(clevr_root, split)
        assert [s["image_index"] for s in sc] == list(range(n))
        first = sc[0]
        assert first["image_filename"] == f"CLEVR_{split}_000000.png" and first["split"] == split
        assert set(first["objects"][0]) >= {"shape", "color", "size", "material", "rotation", "3d_coords",
                                            "pixel_coords"}
        img = Image.open(clevr_root / "images" / split / first["image_filename"])
        assert img.mode == "RGBA" and img.size == (SIZE, SIZE)
        assert len(os.listdir(clevr_root / "images" / split)) == n


def test_pixel_coords_depth_is_distance_along_the_view_axis(clevr_root):
    forward = (LOOK_AT - CAMERA) / np.linalg.norm(LOOK_AT - CAMERA)
    depths = []
    for scene in scenes(clevr_root, "train")[:20]:
        for obj in scene["objects"]:
            depths.append(obj["pixel_coords"][2])
            assert obj["pixel_coords"][2] == pytest.approx((np.array(obj["3d_coords"]) - CAMERA) @ forward, abs=1e-3)
            assert -SIZE * 0.2 < obj["pixel_coords"][0] < SIZE * 1.2
    assert 6.5 < min(depths) and max(depths) < 16.5


def test_object_centres_land_on_their_colour(clevr_root):
    """The projected centre of an unoccluded, large rubber object shows (a shade of) its colour."""
    from ijepa_eval.data.clevr_mini import COLORS

    checked = 0
    for scene in scenes(clevr_root, "val"):
        img = np.asarray(Image.open(clevr_root / "images" / "val" / scene["image_filename"]).convert("RGB"))
        for obj in scene["objects"]:
            if obj["size"] != "large" or obj["material"] != "rubber" or obj["color"] == "gray":
                continue
            closer = [o for o in scene["objects"] if o["pixel_coords"][2] < obj["pixel_coords"][2]]
            x, y, _ = obj["pixel_coords"]
            if any(np.hypot(o["pixel_coords"][0] - x, o["pixel_coords"][1] - y) < 10 for o in closer):
                continue
            pixel = img[int(y), int(x)].astype(float)
            colour = np.array(COLORS[obj["color"]], dtype=float)
            cos = pixel @ colour / (np.linalg.norm(pixel) * np.linalg.norm(colour))
            assert cos > 0.95, (scene["image_filename"], obj)
            checked += 1
    assert checked >= 5


def test_labels_follow_the_vtab_rule_and_splits(clevr_root):
    train = scenes(clevr_root, "train")
    cut = int(0.9 * N_TRAIN)
    for task, rule in (("clevr_count", lambda s: len(s["objects"]) - 3), ("clevr_dist", vtab_dist)):
        for split, part, folder in (("train", train[:cut], "train"), ("val", train[cut:], "train"),
                                    ("test", scenes(clevr_root, "val"), "val")):
            ds = get_dataset(task, clevr_root, split)
            assert ds.labels.tolist() == [rule(s) for s in part]
            assert ds.files == [f"images/{folder}/{s['image_filename']}" for s in part]
        assert ds.num_classes == {"clevr_count": 8, "clevr_dist": 6}[task]
    img, _ = get_dataset("clevr_count", clevr_root, "test")[0]
    assert img.mode == "RGB"  # RGBA PNG converted


def test_every_count_and_distance_class_occurs(clevr_root):
    for task, k in (("clevr_count", 8), ("clevr_dist", 6)):
        hist = np.bincount(get_dataset(task, clevr_root, "train").labels, minlength=k)
        assert len(hist) == k and hist.min() > 0, (task, hist)


def test_deterministic_parallel_and_resumable(tmp_path, clevr_root):
    a = render_clevr_mini(tmp_path / "a", 70, 0, size=32, seed=5, progress=False, workers=1)
    b = render_clevr_mini(tmp_path / "b", 70, 0, size=32, seed=5, progress=False, workers=2)
    assert scenes(a, "train") == scenes(b, "train")
    for name in ("CLEVR_train_000000.png", "CLEVR_train_000069.png"):
        assert (a / "images/train" / name).read_bytes() == (b / "images/train" / name).read_bytes()
    image = a / "images/train/CLEVR_train_000003.png"
    before = image.stat().st_mtime_ns
    render_clevr_mini(a, 70, 0, size=32, seed=5, progress=False, workers=1)  # same settings: kept
    assert image.stat().st_mtime_ns == before
    other = render_clevr_mini(tmp_path / "c", 70, 0, size=32, seed=6, progress=False, workers=1)
    assert scenes(other, "train") != scenes(a, "train")


def test_interrupted_render_is_not_a_dataset(tmp_path, clevr_root):
    root = tmp_path / "partial"
    (root / "images" / "train").mkdir(parents=True)
    (root / "scenes").mkdir()
    with pytest.raises(DatasetError, match="CLEVR_train_scenes.json is missing"):
        get_dataset("clevr_count", root, "train")


def test_clevr_root_may_be_the_parent(tmp_path, clevr_root):
    (tmp_path / "CLEVR_v1.0").symlink_to(clevr_root)
    assert len(get_dataset("clevr_dist", tmp_path, "test")) == N_VAL
    with pytest.raises(DatasetError, match="no CLEVR scenes"):
        get_dataset("clevr_dist", tmp_path / "CLEVR_v1.0" / "images", "test")
