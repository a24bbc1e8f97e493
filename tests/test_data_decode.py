"""Decode backends: every file decodes to PIL.Image.open(f).convert('RGB')'s pixels; files written by PIL."""

import numpy as np
import pytest
import torch
from PIL import Image

from ijepa_eval.data import decode, get_dataset
from ijepa_eval.data.device import collate_uint8
from ijepa_eval.data.synthetic import photo_like, write_cifar100, write_imagenet_like
from ijepa_eval.errors import ConfigError, DatasetError


def reference(path) -> np.ndarray:
    """What every backend must reproduce: PIL's pixels, HWC."""
    return np.asarray(Image.open(path).convert("RGB"))


def hwc(tensor: torch.Tensor) -> np.ndarray:
    assert tensor.dtype == torch.uint8 and tensor.ndim == 3 and tensor.shape[0] == 3
    return tensor.permute(1, 2, 0).numpy()


def exif_rotated() -> bytes:
    exif = Image.Exif()
    exif[decode.ORIENTATION] = 6  # "rotate 90° CW to view": TorchCodec would, Image.open does not
    return exif.tobytes()


@pytest.fixture(scope="module")
def odd_files(tmp_path_factory):
    """One file per case ImageNet and CLEVR hold, written by PIL; name -> (path, fast path expected)."""
    root = tmp_path_factory.mktemp("odd")
    photo = Image.fromarray(photo_like(3, np.random.default_rng(0), 157, 113))
    rgba = photo.convert("RGBA")
    rgba.putalpha(Image.fromarray(np.random.default_rng(1).integers(0, 255, (113, 157), dtype=np.uint8)))
    cases = {
        "baseline.JPEG": (photo, {"quality": 90}, True),
        "progressive.JPEG": (photo, {"quality": 90, "progressive": True}, True),
        "444.JPEG": (photo, {"quality": 90, "subsampling": 0}, True),
        "restarts.JPEG": (photo, {"quality": 85, "restart_marker_blocks": 3}, True),
        "grey.JPEG": (photo.convert("L"), {"quality": 90}, True),
        "exif_upright.JPEG": (photo, {"quality": 90, "exif": Image.Exif().tobytes()}, True),
        "cmyk.JPEG": (photo.convert("CMYK"), {"quality": 90}, False),
        "exif_rotated.JPEG": (photo, {"quality": 90, "exif": exif_rotated()}, False),
        "png_named.JPEG": (photo, {"format": "PNG"}, False),  # ImageNet train's one PNG under a .JPEG name
        "clevr_rgba.png": (rgba, {}, False),
        "palette.png": (photo.convert("P"), {}, False),
        "grey.png": (photo.convert("L"), {}, False),
    }
    out = {}
    for name, (img, kwargs, fast) in cases.items():
        kwargs = dict(kwargs)
        fmt = kwargs.pop("format", "JPEG" if name.endswith(".JPEG") else "PNG")
        img.save(root / name, fmt, **kwargs)
        out[name] = (root / name, fast)
    return out


def test_every_file_decodes_to_pils_pixels_on_every_backend(odd_files):
    for name, (path, fast) in odd_files.items():
        expected = reference(path)
        assert np.array_equal(hwc(decode.read_rgb(path)), expected), name
        item = decode.read_for_device(path)
        assert item.ndim == (1 if fast else 3), name  # encoded bytes go to the device, the rest decode here
        (on_device,) = decode.decode_on_device([item], "cpu")
        assert np.array_equal(hwc(on_device), expected), name
    assert reference(odd_files["exif_rotated.JPEG"][0]).shape[:2] == (113, 157)  # not rotated, like PIL


def test_the_fast_path_takes_exactly_the_plain_jpegs(odd_files, monkeypatch):
    calls = []
    real = decode.torchcodec_decoders()

    class Counting:
        @staticmethod
        def decode_jpeg(*args, **kwargs):
            calls.append(1)
            return real.decode_jpeg(*args, **kwargs)

    monkeypatch.setattr(decode, "torchcodec_decoders", lambda: Counting)
    for name, (path, fast) in odd_files.items():
        calls.clear()
        decode.read_rgb(path)
        assert len(calls) == int(fast), name


def test_a_batch_decodes_together_in_its_order(odd_files):
    paths = [path for path, _ in odd_files.values()]
    images = decode.decode_on_device([decode.read_for_device(p) for p in paths], "cpu")
    for path, image in zip(paths, images, strict=True):
        assert np.array_equal(hwc(image), reference(path))


def test_broken_files_are_one_line_dataset_errors(odd_files, tmp_path):
    data = odd_files["baseline.JPEG"][0].read_bytes()
    truncated = tmp_path / "truncated.JPEG"
    truncated.write_bytes(data[: len(data) // 2])
    for read in (decode.read_rgb, decode.read_for_device):
        with pytest.raises(DatasetError, match="truncated.JPEG is corrupt or truncated"):
            read(truncated)
        with pytest.raises(DatasetError, match="missing.JPEG is missing"):
            read(tmp_path / "missing.JPEG")
    garbage = tmp_path / "garbage.JPEG"
    garbage.write_bytes(b"\xff\xd8 not a jpeg at all")
    with pytest.raises(DatasetError, match="garbage.JPEG is corrupt"):
        decode.read_rgb(garbage)
    with pytest.raises(DatasetError, match="--decode tensor"):
        decode.decode_on_device([torch.frombuffer(bytearray(data[:200] + b"\xff\xd9"), dtype=torch.uint8)], "cpu")


def test_datasets_deliver_each_backends_images(tmp_path):
    root = write_imagenet_like(tmp_path / "in", n_classes=2, n_train_per_class=2, n_val_per_class=1)
    pil = get_dataset("imagenet", root, "train")
    for backend in ("tensor", "gpu"):
        ds = get_dataset("imagenet", root, "train", decode=backend)
        assert ds.fingerprint() == pil.fingerprint()  # the backend is not the dataset's identity: the cache key adds it
        for i in range(len(ds)):
            image, label = ds[i]
            (image,) = decode.decode_on_device([image], "cpu") if backend == "gpu" else (image,)
            assert np.array_equal(hwc(image), np.asarray(pil[i][0])) and label == pil[i][1]
    assert np.array_equal(hwc(pil.read(0, "tensor")), np.asarray(pil.read(0)))  # a backend per call
    cifar = write_cifar100(tmp_path / "c", 3, 3)
    tensor, pil = get_dataset("cifar100", cifar, "test", decode="tensor"), get_dataset("cifar100", cifar, "test")
    assert all(np.array_equal(hwc(tensor[i][0]), np.asarray(pil[i][0])) for i in range(len(pil)))
    batch = collate_uint8([get_dataset("imagenet", root, "train", decode="gpu")[i] for i in range(2)])
    assert isinstance(batch[0], list) and batch[1].tolist() == [0, 0]


def test_bad_decode_options_are_config_errors(tmp_path):
    root = write_imagenet_like(tmp_path / "in", n_classes=1, n_train_per_class=1, n_val_per_class=0)
    with pytest.raises(ConfigError, match="unknown decode backend .--decode. 'tensr'. Did you mean 'tensor'"):
        get_dataset("imagenet", root, "train", decode="tensr")
    with pytest.raises(ConfigError, match="decode 'gpu' decodes and resizes on the device"):
        get_dataset("imagenet", root, "train", decode="gpu", transform=lambda x: x)
