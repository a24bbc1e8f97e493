"""CLEVR-mini renderer and the CLEVR sources: layout, VTAB labels recomputed from the scenes JSON, splits."""

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ijepa_eval.data import get_dataset
from ijepa_eval.data.clevr import tfds_order, vtab_train_val
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


def tfds_rank(names: list[str], salt: bytes = b"train") -> np.ndarray:
    """Indices of ``names`` sorted by md5(salt + name) read as a 128-bit big-endian number: the two
    64-bit halves compared lexicographically (numpy), an independent formulation of TFDS' sort."""
    digests = np.frombuffer(b"".join(hashlib.md5(salt + n.encode()).digest() for n in names), dtype=">u8")
    hi, lo = digests[0::2], digests[1::2]
    return np.lexsort((lo, hi))


def test_labels_follow_the_vtab_rule_and_splits(clevr_root):
    train = scenes(clevr_root, "train")
    rank = tfds_rank([s["image_filename"] for s in train])
    cut = 90 * N_TRAIN // 100
    in_train, in_val = [train[i] for i in rank[:cut]], [train[i] for i in rank[cut:]]
    for task, rule in (("clevr_count", lambda s: len(s["objects"]) - 3), ("clevr_dist", vtab_dist)):
        for split, part, folder in (("train", in_train, "train"), ("val", in_val, "train"),
                                    ("trainval", in_train + in_val, "train"), ("test", scenes(clevr_root, "val"), "val")):
            ds = get_dataset(task, clevr_root, split)
            assert ds.labels.tolist() == [rule(s) for s in part]
            assert ds.files == [f"images/{folder}/{s['image_filename']}" for s in part]
        assert ds.num_classes == {"clevr_count": 8, "clevr_dist": 6}[task]
    img, _ = get_dataset("clevr_count", clevr_root, "test")[0]
    assert img.mode == "RGB"  # RGBA PNG converted


def test_vtab_split_of_the_real_size_clevr_train_list():
    """CLEVR_train_000000.png ... CLEVR_train_069999.png: VTAB train = first 63,000 in TFDS order, val = rest."""
    names = [f"CLEVR_train_{i:06d}.png" for i in range(70_000)]
    train, val = vtab_train_val(names)
    assert (len(train), len(val)) == (63_000, 7_000)
    assert not set(train) & set(val) and sorted(train + val) == list(range(70_000))
    assert (train, val) == vtab_train_val(list(names))  # deterministic
    rank = tfds_rank(names)
    assert train == rank[:63_000].tolist() and val == rank[63_000:].tolist()
    # a few members computed one by one: the smallest and largest salted hashes, and the first val record
    hashes = [int(hashlib.md5(("train" + n).encode()).hexdigest(), 16) for n in names]
    smallest, largest = min(range(70_000), key=hashes.__getitem__), max(range(70_000), key=hashes.__getitem__)
    assert train[0] == smallest and val[-1] == largest
    threshold = sorted(hashes)[63_000]
    assert val[0] == hashes.index(threshold) and all(hashes[i] < threshold for i in train[:100])
    # the salt matters (TFDS salts with the split name) and the val split is not the last 7,000 by index
    assert vtab_train_val(names) != (list(range(63_000)), list(range(63_000, 70_000)))
    assert tfds_order(names[:1000], salt="validation") != tfds_order(names[:1000])
    assert sum(i >= 63_000 for i in val) == pytest.approx(700, abs=120)  # ~10% of val falls in the last 10%


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


def test_counting_does_not_need_pixel_coords_but_distance_does(tmp_path, clevr_root):
    """Scenes whose objects carry no pixel_coords (a trimmed scenes file): counting reads only len(objects),
    so clevr_count loads with the same labels; clevr_dist, which reads the depth, refuses in one line."""
    root = tmp_path / "clevr"
    (root / "scenes").mkdir(parents=True)
    (root / "images").symlink_to(clevr_root / "images")
    for split in ("train", "val"):
        trimmed = [{**s, "objects": [{k: v for k, v in o.items() if k != "pixel_coords"} for o in s["objects"]]}
                   for s in scenes(clevr_root, split)]
        (root / "scenes" / f"CLEVR_{split}_scenes.json").write_text(json.dumps({"scenes": trimmed}))
    for split in ("train", "val", "test"):
        trimmed, full = (get_dataset("clevr_count", r, split) for r in (root, clevr_root))
        np.testing.assert_array_equal(trimmed.labels, full.labels)
    with pytest.raises(DatasetError, match=r"has an object without pixel_coords \[x, y, depth\]; re-download it"):
        get_dataset("clevr_dist", root, "train")
