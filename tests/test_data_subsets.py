"""SimCLR ImageNet subsets: the real split files (parser, hash, class counts) and the loader on a small split."""

import collections
import hashlib
import shutil
from pathlib import Path

import pytest

from ijepa_eval.data import get_dataset, synthetic
from ijepa_eval.data.subsets import OFFICIAL_SHA256, read_split_file, split_info
from ijepa_eval.errors import DatasetError


def test_real_1percent_file(imagenet_subsets_dir):
    path = Path(imagenet_subsets_dir) / "1percent.txt"
    names, wnids = read_split_file(path)
    assert len(names) == 12811 and len(set(names)) == 12811
    per_class = collections.Counter(wnids)
    assert len(per_class) == 1000
    assert collections.Counter(per_class.values()) == {12: 189, 13: 811}
    info = split_info("imagenet_1pct", path)
    assert info["official"] and info["split_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert info["split_sha256"] == "71e82a48ba78252683ae334c4d019ebd5c6e855b9599c1389fbe83eb9549cf17"


def test_real_10percent_file(imagenet_subsets_dir):
    path = Path(imagenet_subsets_dir) / "10percent.txt"
    names, wnids = read_split_file(path)
    assert len(names) == 128116 and len(set(wnids)) == 1000
    assert split_info("imagenet_10pct", path)["official"]
    # the two files are not interchangeable
    assert not split_info("imagenet_10pct", Path(imagenet_subsets_dir) / "1percent.txt")["official"]


@pytest.fixture
def tree(tmp_path) -> Path:
    return synthetic.write_imagenet(tmp_path, n_classes=4, n_train_per_class=3, n_val_per_class=1,
                                    size=16, split_file_per_class=2)


def test_custom_split_file_needs_opt_in(tree):
    with pytest.raises(DatasetError, match="not the official SimCLR 1percent.txt.*allow_custom_split=True.*"
                       r"dataset\.options\.allow_custom_split=true"):
        get_dataset("imagenet_1pct", tree, "train")


def test_subset_loader_on_custom_split(tree):
    ds = get_dataset("imagenet_1pct", tree, "train", allow_custom_split=True)
    lines = (tree / "1percent.txt").read_text().split()
    wnids = sorted(p.name for p in (tree / "train").iterdir())
    assert len(ds) == 8 and ds.num_classes == 4
    assert ds.labels.tolist() == [wnids.index(line.split("_")[0]) for line in lines]
    assert ds.split_info["official"] is False and ds.split_info["split_sha256"] != OFFICIAL_SHA256["1percent.txt"]
    val = get_dataset("imagenet_1pct", tree, "val", allow_custom_split=True)
    full_val = get_dataset("imagenet", tree, "val")
    assert val.files == full_val.files and val.labels.tolist() == full_val.labels.tolist()
    # the same class gets the same index in the subset's train split and in val
    assert {f.split("/")[1]: int(y) for f, y in zip(ds.files, ds.labels, strict=True)} == {
        f.split("/")[1]: int(y) for f, y in zip(val.files, val.labels, strict=True)
    }


def test_split_file_locations_and_missing(tree, tmp_path):
    (tree / "imagenet_subsets").mkdir()
    shutil.move(tree / "1percent.txt", tree / "imagenet_subsets" / "1percent.txt")
    assert len(get_dataset("imagenet_1pct", tree, "train", allow_custom_split=True)) == 8
    with pytest.raises(DatasetError, match="10percent.txt.*split_file=PATH"):
        get_dataset("imagenet_10pct", tree, "train")
    custom = tmp_path / "my_split.txt"
    custom.write_text((tree / "imagenet_subsets" / "1percent.txt").read_text().split("\n")[0] + "\n")
    ds = get_dataset("imagenet_10pct", tree, "train", split_file=custom, allow_custom_split=True)
    assert len(ds) == 1 and ds.split_info["split_file"] == str(custom)


def test_split_naming_missing_images(tree):
    split = tree / "1percent.txt"
    wnid = split.read_text().split("_")[0]
    split.write_text(split.read_text() + f"{wnid}_999.JPEG\n{wnid}_998.JPEG\n")
    with pytest.raises(DatasetError, match=rf"2 of 10 images .* missing .*first: train/{wnid}/{wnid}_999.JPEG"):
        get_dataset("imagenet_1pct", tree, "train", allow_custom_split=True)


def test_official_file_against_a_tree_without_those_classes(tree, imagenet_subsets_dir):
    # the synthetic tree holds n01440764 (a real ImageNet class) and three made-up ids
    with pytest.raises(DatasetError, match="names 999 classes missing"):
        get_dataset("imagenet_1pct", tree, "train", split_file=Path(imagenet_subsets_dir) / "1percent.txt")


def test_malformed_split_line(tree):
    (tree / "1percent.txt").write_text("train/n01440764/x.JPEG\n")
    with pytest.raises(DatasetError, match="1percent.txt:1: .* is not a SimCLR split entry"):
        get_dataset("imagenet_1pct", tree, "train", allow_custom_split=True)
