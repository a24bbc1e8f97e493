"""The shift sets' loaders on trees written in each set's released layout; label conventions vs independent reads."""

import hashlib
import json
import pkgutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ijepa_eval.data import get_dataset, synthetic
from ijepa_eval.data.imagenet_tables import (
    CORRUPTION_GROUPS,
    CORRUPTIONS,
    EXTRA_CORRUPTIONS,
    alexnet_errors,
    imagenet1k_wnids,
    imagenet_a_wnids,
    imagenet_r_wnids,
)
from ijepa_eval.data.real import VAL_IMAGES, load_real, read_real, real_labels_for
from ijepa_eval.data.roots import family
from ijepa_eval.data.synthetic_shift import write_shift_twins
from ijepa_eval.errors import DatasetError

IN1K = list(imagenet1k_wnids())


def tiny(path: Path, value: int = 0, fmt: str = "JPEG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (value % 256, 40, 90)).save(path, fmt)


def write_v2_numeric(variant_dir: Path, n: int = 1000) -> None:
    """The HF release: one folder per class index, files named by content hash, lowercase .jpeg."""
    for k in range(n):
        tiny(variant_dir / str(k) / f"{hashlib.sha1(str(k).encode()).hexdigest()}.jpeg", k)


@pytest.fixture(scope="module")
def v2_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("v2")
    write_v2_numeric(root / "imagenetv2-matched-frequency-format-val")
    return root


# ------------------------------------------------------------------------------------------------ ImageNetV2


def test_v2_folders_are_class_indices_read_as_numbers(v2_root):
    from torchvision.datasets import ImageFolder

    ds = get_dataset("imagenet_v2", v2_root, "matched-frequency")
    assert (len(ds), ds.num_classes, ds.classes) == (1000, 1000, IN1K)
    # the independent reading: ImageNetV2_pytorch labels a file int(parent folder name)
    assert ds.labels.tolist() == [int(Path(f).parent.name) for f in ds.files]
    assert ds.labels[list(ds.files).index(next(f for f in ds.files if "/990/" in f))] == 990
    # the trap the loader avoids: ImageFolder sorts '0', '1', '10', '100', ... and mislabels 988 classes
    folder = ImageFolder(v2_root / "imagenetv2-matched-frequency-format-val")
    lexical = {Path(p).parent.name: y for p, y in folder.samples}
    assert sum(int(name) != y for name, y in lexical.items()) == 988
    # the variant folder itself is a root too
    assert get_dataset("imagenet_v2", v2_root / "imagenetv2-matched-frequency-format-val",
                       "matched-frequency").labels.tolist() == ds.labels.tolist()


def test_v2_refuses_folder_1000_and_missing_classes(tmp_path):
    base = tmp_path / "imagenetv2-top-images-format-val"
    write_v2_numeric(base, 1001)
    with pytest.raises(DatasetError, match=r"imagenetv2-top-images-format-val/1000 is not a class folder.*0 … 999"):
        get_dataset("imagenet_v2", tmp_path, "top-images")
    for f in (base / "1000").iterdir():
        f.unlink()
    (base / "1000").rmdir()
    for f in (base / "17").iterdir():
        f.unlink()
    (base / "17").rmdir()
    with pytest.raises(DatasetError, match=r"lacks 1 of the 1000 class folders of ImageNetV2 top-images \(e.g. 17\)"):
        get_dataset("imagenet_v2", tmp_path, "top-images")


def test_v2_wnid_release_and_a_leading_zero(tmp_path):
    classes = synthetic.wnids(3)
    for i, w in enumerate(classes):  # the older S3 release: wnid folders
        tiny(tmp_path / "imagenet-threshold-0.7-format-val" / w / "0.jpeg", i)
    ds = get_dataset("imagenet_v2", tmp_path, "threshold-0.7", classes=classes)
    assert ds.labels.tolist() == [0, 1, 2] and "wnid" in ds.label_convention
    base = tmp_path / "imagenetv2-matched-frequency-format-val"
    for name in ("0", "01", "2"):
        tiny(base / name / "a.jpeg")
    with pytest.raises(DatasetError, match="/01 is not a class folder"):
        get_dataset("imagenet_v2", tmp_path, "matched-frequency", classes=classes)


# --------------------------------------------------------------------------------------- ImageNet-A and -R


def test_200_class_tables_match_the_datasets_eval_code_and_timm():
    # hendrycks/natural-adv-examples eval.py: thousand_k_to_200's first non -1 keys; hendrycks/imagenet-r
    # eval.py: the commented imagenet_r_indices
    a_idx = [IN1K.index(w) for w in imagenet_a_wnids()]
    r_idx = [IN1K.index(w) for w in imagenet_r_wnids()]
    assert a_idx[:12] == [6, 11, 13, 15, 17, 22, 23, 27, 30, 37, 39, 42] and a_idx[-3:] == [986, 987, 988]
    assert r_idx[:12] == [1, 2, 4, 6, 8, 9, 11, 13, 22, 23, 26, 29] and r_idx[-4:] == [980, 981, 983, 988]
    assert len(set(imagenet_a_wnids()) & set(imagenet_r_wnids())) == 86
    for ours, theirs in ((imagenet_a_wnids(), "imagenet_a_synsets.txt"), (imagenet_r_wnids(), "imagenet_r_synsets.txt"),
                         (IN1K, "imagenet_synsets.txt")):
        assert list(ours) == pkgutil.get_data("timm.data", f"_info/{theirs}").decode().split()


@pytest.mark.parametrize("name, folder, wnids", [("imagenet_a", "imagenet-a", imagenet_a_wnids),
                                                 ("imagenet_r", "imagenet-r", imagenet_r_wnids)])
def test_a_and_r_label_the_200_folders_in_the_1000_class_space(tmp_path, name, folder, wnids):
    for i, w in enumerate(wnids()):
        for k in range(2 if i == 0 else 1):
            tiny(tmp_path / folder / w / f"{k}.jpg", i)
    (tmp_path / folder / "README.txt").write_text("the release's readme")
    ds = get_dataset(name, tmp_path, "test")
    assert (len(ds), ds.num_classes) == (201, 1000)
    assert ds.labels.tolist() == [IN1K.index(Path(f).parent.name) for f in ds.files]
    assert ds.allowed_classes.tolist() == sorted(IN1K.index(w) for w in wnids())
    # the dataset's own ImageFolder label is the position among the 200: recoverable from allowed_classes
    native = np.searchsorted(ds.allowed_classes, ds.labels)
    assert native.tolist() == [sorted(wnids()).index(Path(f).parent.name) for f in ds.files]
    missing = wnids()[5]
    for f in (tmp_path / folder / missing).iterdir():
        f.unlink()
    (tmp_path / folder / missing).rmdir()
    with pytest.raises(DatasetError, match=rf"lacks 1 of the 200 class folders .*\(e.g. {missing}\)"):
        get_dataset(name, tmp_path, "test")


def test_a_refuses_a_head_without_its_classes_and_stray_folders(tmp_path):
    classes = synthetic.wnids(4)
    for i in (0, 2):  # a synthetic twin: the folders present form the subset
        tiny(tmp_path / "imagenet-a" / classes[i] / "x.jpg", i)
    ds = get_dataset("imagenet_a", tmp_path, "test", classes=classes)
    assert ds.allowed_classes.tolist() == [0, 2] and ds.labels.tolist() == [0, 2]
    tiny(tmp_path / "imagenet-a" / "n09999999" / "x.jpg")
    with pytest.raises(DatasetError, match="n09999999.* are not among the 4 classes of the head"):
        get_dataset("imagenet_a", tmp_path, "test", classes=classes)
    with pytest.raises(DatasetError, match="imagenet-a/n09999999 is not a class folder of ImageNet-A"):
        get_dataset("imagenet_a", tmp_path, "test", classes=classes, subset=classes[::2])


# -------------------------------------------------------------------------------------------- ImageNet-Sketch


def test_sketch_folders_and_missing_class(tmp_path):
    classes = synthetic.wnids(3)
    for i, w in enumerate(classes):
        for k in range(2):
            tiny(tmp_path / "sketch" / w / f"sketch_{k}.JPEG", i)
    ds = get_dataset("imagenet_sketch", tmp_path, "test", classes=classes)
    assert ds.labels.tolist() == [0, 0, 1, 1, 2, 2] and ds.files[0] == f"sketch/{classes[0]}/sketch_0.JPEG"
    with pytest.raises(DatasetError, match=r"lacks 1 of the 4 class folders of ImageNet-Sketch \(e.g. n01443764\)"):
        get_dataset("imagenet_sketch", tmp_path, "test", classes=synthetic.wnids(4))


def test_sketch_from_hf_parquet_keeps_the_imagenet_index(tmp_path):
    import datasets

    names = ["tench, Tinca tinca", "goldfish", "great white shark"]  # HF names classes, in ImageNet order
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})
    images = [Image.new("RGB", (8, 8), (10 * i, 0, 0)) for i in range(5)]
    table = datasets.Dataset.from_dict({"image": images, "label": [2, 0, 1, 2, 0]}, features=features)
    (tmp_path / "data").mkdir()
    table.to_parquet(str(tmp_path / "data" / "train-00000-of-00001.parquet"))
    classes = synthetic.wnids(3)
    ds = get_dataset("imagenet_sketch", f"hf:{tmp_path}", "test", classes=classes)
    assert (ds.name, ds.split, ds.classes, ds.labels.tolist()) == ("imagenet_sketch", "test", classes, [2, 0, 1, 2, 0])
    with pytest.raises(DatasetError, match="has 3 classes, the head 4"):
        get_dataset("imagenet_sketch", f"hf:{tmp_path}", "test", classes=synthetic.wnids(4))


# ------------------------------------------------------------------------------------------------ ImageNet-C


def write_c(root: Path, classes: list[str], corruptions, grouped: bool = False) -> None:
    for c in corruptions:
        group = next(g for g, names in CORRUPTION_GROUPS.items() if c in names)
        for s in range(1, 6):
            for i, w in enumerate(classes):
                for k in range(2):
                    base = root / group / c if grouped else root / c
                    tiny(base / str(s) / w / f"ILSVRC2012_val_{2 * i + k + 1:08d}.JPEG", 50 * s + i)


def test_c_layout_grouped_or_flat_and_paired_file_names(tmp_path):
    classes = synthetic.wnids(3)
    write_c(tmp_path / "flat", classes, ["gaussian_noise", "fog"])
    write_c(tmp_path / "grouped", classes, ["gaussian_noise", "spatter"], grouped=True)
    a = get_dataset("imagenet_c", tmp_path / "flat", "gaussian_noise/3", classes=classes)
    b = get_dataset("imagenet_c", tmp_path / "grouped", "gaussian_noise/3", classes=classes)
    e = get_dataset("imagenet_c", tmp_path / "grouped", "spatter/5", classes=classes)
    assert a.labels.tolist() == b.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert a.files[0] == f"gaussian_noise/3/{classes[0]}/ILSVRC2012_val_00000001.JPEG"
    assert b.files[0].startswith("noise/gaussian_noise/3/") and e.files[0].startswith("extra/spatter/5/")
    assert len({a.fingerprint(), b.fingerprint(), e.fingerprint()}) == 3
    assert len(CORRUPTIONS) == 15 and len(EXTRA_CORRUPTIONS) == 4


def test_c_refuses_a_corruption_without_severities(tmp_path):
    classes = synthetic.wnids(2)
    for w in classes:
        tiny(tmp_path / "frost" / w / "ILSVRC2012_val_00000001.JPEG")
    with pytest.raises(DatasetError, match=r"frost holds n01440764, n01441764, not the severity folders 1 … 5; "
                                           r"expected .*frost/<severity 1-5>/<wnid>/\*.JPEG"):
        get_dataset("imagenet_c", tmp_path, "frost/1", classes=classes)
    with pytest.raises(DatasetError, match=r"no ImageNet-C corruption folder .*/fog \(nor .*/weather/fog\)"):
        get_dataset("imagenet_c", tmp_path, "fog/1", classes=classes)
    with pytest.raises(DatasetError, match="unknown split"):
        get_dataset("imagenet_c", tmp_path, "frost/6", classes=classes)


# ------------------------------------------------------------------------------------------------------ ReaL


def test_real_labels_follow_val_file_names_and_keep_empty_lists(tmp_path):
    entries = [[] for _ in range(VAL_IMAGES)]
    entries[0], entries[1], entries[49_999] = [3, 7], [], [999]
    (tmp_path / "real.json").write_text(json.dumps(entries))
    files = ["val/n2/ILSVRC2012_val_00050000.JPEG", "val/n1/ILSVRC2012_val_00000002.JPEG",
             "val/n1/ILSVRC2012_val_00000001.JPEG"]
    labels, info = load_real(tmp_path, files)
    assert labels.tolist() == [[999, -1], [-1, -1], [3, 7]]
    assert info["n_empty"] == VAL_IMAGES - 2 and info["file"].endswith("real.json")
    with pytest.raises(DatasetError, match="n1/cat.JPEG is not named ILSVRC2012_val_XXXXXXXX"):
        real_labels_for(["val/n1/cat.JPEG"], entries)


def test_real_refuses_a_file_of_the_wrong_length_or_with_bad_entries(tmp_path):
    path = tmp_path / "real.json"
    path.write_text(json.dumps([[1]] * (VAL_IMAGES - 1)))
    with pytest.raises(DatasetError, match=rf"{path} holds 49999 entries; expected a JSON list of 50000 lists"):
        read_real(path)
    bad = [[] for _ in range(VAL_IMAGES)]
    bad[9] = [1000]
    path.write_text(json.dumps(bad))
    with pytest.raises(DatasetError, match=r"entry 9 \(ILSVRC2012_val_00000010\) is \[1000\]"):
        read_real(path)
    path.write_text("{not json")
    with pytest.raises(DatasetError, match="is not JSON"):
        read_real(path)
    with pytest.raises(DatasetError, match="download real.json"):
        load_real(tmp_path / "nowhere", [])


def test_alexnet_table_is_augmix_alexnet_err():
    # google-research/augmix imagenet.py: CORRUPTIONS and ALEXNET_ERR, typed here from that file
    augmix = [0.886428, 0.894468, 0.922640, 0.819880, 0.826268, 0.785948, 0.798360, 0.866816, 0.826572,
              0.819324, 0.564592, 0.853204, 0.646056, 0.717840, 0.606500]
    assert list(alexnet_errors()) == list(CORRUPTIONS) and list(alexnet_errors().values()) == augmix


# ------------------------------------------------------------------------------------- roots and the twins


def test_shift_families_have_roots_of_their_own(tmp_path, monkeypatch):
    assert family("imagenet_a") == "imagenet_a" and family("imagenet_1pct") == "imagenet"
    imagenet = synthetic.write_imagenet(tmp_path / "imagenet", n_classes=4, n_train_per_class=1,
                                        n_val_per_class=3, size=16)
    roots = write_shift_twins(imagenet, tmp_path / "data", corruptions=("gaussian_noise", "zoom_blur"))
    monkeypatch.setenv("IJEPA_EVAL_DATA", str(tmp_path / "data"))
    classes = synthetic.wnids(4)
    val = get_dataset("imagenet", imagenet, "val")
    for variant in ("matched-frequency", "threshold-0.7", "top-images"):
        assert get_dataset("imagenet_v2", None, variant, classes=classes).labels.tolist() == val.labels.tolist()
    a = get_dataset("imagenet_a", None, "test", classes=classes)
    r = get_dataset("imagenet_r", None, "test", classes=classes)
    assert a.allowed_classes.tolist() == [0, 2] and r.allowed_classes.tolist() == [1, 3]
    assert len(get_dataset("imagenet_sketch", None, "test", classes=classes)) == len(val)
    c = [get_dataset("imagenet_c", None, f"{name}/{s}", classes=classes)
         for name in ("gaussian_noise", "zoom_blur") for s in (1, 5)]
    assert len({tuple(Path(f).name for f in d.files) for d in c}) == 1  # the same images: paired
    real, info = load_real(roots["imagenet_real"], val.files, num_classes=4)
    assert real[:, 0].tolist() == [y if k % 5 != 4 else -1 for k, y in enumerate(val.labels.tolist())]
    assert real[3].tolist() == [val.labels[3], (val.labels[3] + 1) % 4]
    # the corrupted copies differ from the clean val image, more at higher severity
    clean = np.asarray(val.load(0), dtype=float)
    diffs = [np.abs(np.asarray(c[i].load(0), dtype=float) - clean).mean() for i in (0, 1)]
    assert 0 < diffs[0] < diffs[1]
