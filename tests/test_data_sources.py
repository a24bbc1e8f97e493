"""Every dataset source on a synthetic twin written in the dataset's native format; labels vs independent reads."""

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ijepa_eval.data import eval_transform, get_dataset, synthetic
from ijepa_eval.errors import DatasetError


@pytest.fixture(scope="module")
def imagenet_root(tmp_path_factory) -> Path:
    return synthetic.write_imagenet(tmp_path_factory.mktemp("imagenet"), n_classes=3, n_train_per_class=3,
                                    n_val_per_class=2, size=24)


def test_imagenet_labels_follow_sorted_wnid_folders(imagenet_root):
    wnids = sorted(os.listdir(imagenet_root / "train"))
    for split, per_class in (("train", 3), ("val", 2)):
        ds = get_dataset("imagenet", imagenet_root, split)
        assert (ds.name, ds.split, ds.num_classes, len(ds)) == ("imagenet", split, 3, 3 * per_class)
        expected = [wnids.index(Path(f).parent.name) for f in ds.files]
        assert ds.labels.dtype == np.int64 and ds.labels.tolist() == expected
        img, label = ds[len(ds) - 1]
        assert label == 2 and img.mode == "RGB"
        on_disk = np.asarray(Image.open(imagenet_root / ds.files[-1]).convert("RGB"))
        assert np.array_equal(np.asarray(img), on_disk)


def test_imagenet_rejects_non_wordnet_folders(tmp_path):
    synthetic._save(tmp_path / "train" / "cat" / "a.jpg", synthetic.class_image(0, np.random.default_rng(0)))
    with pytest.raises(DatasetError, match="nXXXXXXXX"):
        get_dataset("imagenet", tmp_path, "train")
    assert len(get_dataset("folder", tmp_path, "train")) == 1


def test_cifar100_pixels_and_labels_match_the_pickle(tmp_path):
    synthetic.write_cifar100(tmp_path, n_train=30, n_test=20, seed=1)
    with open(tmp_path / "cifar-100-python" / "test", "rb") as f:
        raw = pickle.load(f, encoding="latin1")  # the way torchvision reads the original files
    with open(tmp_path / "cifar-100-python" / "meta", "rb") as f:
        meta = pickle.load(f, encoding="latin1")
    ds = get_dataset("cifar100", tmp_path, "test")
    assert len(ds) == 20 and ds.num_classes == 100 and ds.classes == meta["fine_label_names"]
    assert ds.labels.tolist() == raw["fine_labels"]
    for i in (0, 7, 19):
        img, label = ds[i]
        row = raw["data"][i]
        assert img.size == (32, 32) and label == raw["fine_labels"][i]
        # channel-major row: the first 1024 values are the red plane, row by row
        assert np.array_equal(np.asarray(img)[..., 0].ravel(), row[:1024])
        assert np.array_equal(np.asarray(img)[..., 2].ravel(), row[2048:])
    # the cifar-100-python folder itself is accepted as the root
    assert len(get_dataset("cifar100", tmp_path / "cifar-100-python", "train")) == 30


def test_cifar100_refuses_pickles_that_would_run_code(tmp_path):
    synthetic.write_cifar100(tmp_path, n_train=2, n_test=2)
    with open(tmp_path / "cifar-100-python" / "train", "wb") as f:
        pickle.dump({"data": os.system}, f)
    with pytest.raises(DatasetError, match="not a valid CIFAR pickle"):
        get_dataset("cifar100", tmp_path, "train")


def test_flat_val_folder_gets_a_hint(tmp_path):
    root = synthetic.write_imagenet(tmp_path, n_classes=2, n_train_per_class=1, n_val_per_class=1, size=8)
    for path in list((root / "val").rglob("*.JPEG")):
        path.rename(root / "val" / path.name)
        path.parent.rmdir()
    with pytest.raises(DatasetError, match="sort them into <class>/ sub-folders"):
        get_dataset("imagenet", root, "val")


def test_places205_list_files(tmp_path):
    synthetic.write_places205(tmp_path, n_classes=4, n_train=12, n_val=8)
    lines = (tmp_path / "trainvalsplit_places205" / "val_places205.csv").read_text().split("\n")
    expected = [int(line.split(" ")[1]) for line in lines if line]
    ds = get_dataset("places205", tmp_path, "val")
    assert ds.num_classes == 205 and ds.labels.tolist() == expected
    assert ds[3][1] == expected[3] and ds[3][0].size == (32, 32)


def test_places205_class_folders(imagenet_root):
    ds = get_dataset("places205", imagenet_root, "val")
    assert len(ds) == 6 and ds.num_classes == 3


def test_inat18_coco_json(tmp_path):
    synthetic.write_inat18(tmp_path, n_classes=5, n_train=15, n_val=10)
    ann = json.loads((tmp_path / "val2018.json").read_text())
    file_to_cat = {img["file_name"]: a["category_id"]
                   for img in ann["images"] for a in ann["annotations"] if a["image_id"] == img["id"]}
    ds = get_dataset("inat18", tmp_path, "val")
    assert ds.num_classes == 5 and len(ds) == 10
    assert [file_to_cat[f] for f in ds.files] == ds.labels.tolist()
    assert ds[0][0].mode == "RGB"


def test_hf_local_parquet(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    root = synthetic.write_parquet(tmp_path / "pq", n_classes=3, n_per_split=(("train", 9), ("validation", 6)))
    table = pq.read_table(root / "data" / "validation-00000-of-00001.parquet")
    ds = get_dataset(f"hf:{root}", split="val", cache_dir=str(tmp_path / "cache"))
    assert ds.num_classes == 3 and ds.labels.tolist() == table.column("label").to_pylist()
    img, label = ds[4]
    raw = Image.open(__import__("io").BytesIO(table.column("image")[4].as_py()["bytes"]))
    assert label == ds.labels[4] and np.array_equal(np.asarray(img), np.asarray(raw.convert("RGB")))
    with pytest.raises(DatasetError, match="no split 'test'"):
        get_dataset(f"hf:{root}", split="test", cache_dir=str(tmp_path / "cache"))
    with pytest.raises(DatasetError, match="no column 'img'"):
        get_dataset(f"hf:{root}", split="train", image_column="img", cache_dir=str(tmp_path / "cache"))
    with pytest.raises(DatasetError, match="does not exist"):
        get_dataset(f"hf:{tmp_path}/nowhere", split="train")


def test_transform_is_applied(imagenet_root):
    x, y = get_dataset("imagenet", imagenet_root, "val", transform=eval_transform("imagenet", 32))[0]
    assert tuple(x.shape) == (3, 32, 32) and y == 0


def test_lookup_errors(imagenet_root):
    with pytest.raises(DatasetError, match="Did you mean 'imagenet'"):
        get_dataset("imagenett", imagenet_root)
    with pytest.raises(DatasetError, match="split for dataset 'cifar100' 'val'"):
        get_dataset("cifar100", imagenet_root, "val")
    with pytest.raises(DatasetError, match="option .* 'split_file'"):
        get_dataset("imagenet", imagenet_root, split_file="x.txt")


def test_empty_split_and_out_of_range_labels(tmp_path):
    (tmp_path / "train" / "n00000001").mkdir(parents=True)
    with pytest.raises(DatasetError, match="is empty"):
        get_dataset("folder", tmp_path, "train")
    synthetic.write_places205(tmp_path / "p", n_train=4, n_val=2)
    csv = tmp_path / "p" / "trainvalsplit_places205" / "val_places205.csv"
    csv.write_text(csv.read_text().replace(" 1\n", " 205\n"))
    with pytest.raises(DatasetError, match=r"labels in \[0, 205\] outside \[0, 204\]"):
        get_dataset("places205", tmp_path / "p", "val")


def test_corrupt_and_missing_images_name_the_file(tmp_path):
    root = synthetic.write_imagenet(tmp_path, n_classes=2, n_train_per_class=2, n_val_per_class=1)
    ds = get_dataset("imagenet", root, "train", skip_bad_images=False)
    tolerant = get_dataset("imagenet", root, "train", skip_bad_images=True)
    bad = root / ds.files[1]
    bad.write_bytes(bad.read_bytes()[:100])  # truncated JPEG
    with pytest.raises(DatasetError, match=f"{bad.name} is corrupt or truncated") as err:
        ds[1]
    assert "\n" not in str(err.value)
    (root / ds.files[2]).unlink()
    with pytest.raises(DatasetError, match=f"{ds.files[2].split('/')[-1]} is missing"):
        ds.load(2)
    assert tolerant[1] == (None, 0) and tolerant[2] == (None, 1) and tolerant[0][0] is not None
    with pytest.raises(DatasetError, match="corrupt"):
        tolerant.load(1)


def test_fingerprint_tracks_file_sizes_only(tmp_path):
    root = synthetic.write_imagenet(tmp_path, n_classes=2, n_train_per_class=2, n_val_per_class=1)
    ds = get_dataset("imagenet", root, "train")
    first = ds.fingerprint()
    assert first == get_dataset("imagenet", root, "train").fingerprint()
    assert first != get_dataset("imagenet", root, "val").fingerprint()
    path = root / ds.files[0]
    os.utime(path, (1, 1))  # touching a file does not change the content identity
    assert ds.fingerprint() == first
    with open(path, "ab") as f:
        f.write(b"\0")
    assert ds.fingerprint() != first


def test_fingerprint_never_decodes_images(tmp_path, monkeypatch):
    root = synthetic.write_imagenet(tmp_path, n_classes=2, n_train_per_class=2, n_val_per_class=1)

    def refuse(*args, **kwargs):
        raise AssertionError("an image was opened")

    monkeypatch.setattr(Image, "open", refuse)
    ds = get_dataset("imagenet", root, "train")
    assert len(ds.fingerprint()) == 64 and ds.labels.tolist() == [0, 0, 1, 1]
