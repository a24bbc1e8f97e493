"""Eval/train transforms vs VISSL's ViT-H benchmark configs (DESIGN §5), computed independently with PIL."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from ijepa_eval.data import describe_transform, eval_transform, train_transform
from ijepa_eval.data import transforms as transforms_module

MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])
BICUBIC, BILINEAR = Image.Resampling.BICUBIC, Image.Resampling.BILINEAR

# The TEST transforms of vissl configs/config/benchmark/linear_image_classification/<dataset>/
# models/vit_h16_no_cls.yaml (or its base yaml where the model yaml sets none): (resize, crop, PIL filter).
# resize is an int (shorter side) before a center crop, or a (w, h) pair with no crop (CLEVR).
VISSL_TEST = {
    "imagenet": (256, 224, BICUBIC),       # imagenet1k/models/vit_h16_no_cls.yaml: Resize 256 interp 3
    "cifar100": (256, 224, BICUBIC),       # cifar100/models/vit_h16_no_cls.yaml: Resize 256 interp 3
    "places205": (256, 224, BILINEAR),     # places205 base yaml: Resize 256 (torchvision default)
    "inat18": (256, 224, BILINEAR),        # inaturalist18 base yaml: Resize 256
    "clevr_count": ((224, 224), None, BILINEAR),  # clevr_count base yaml: Resize [224, 224]
    "clevr_dist": ((224, 224), None, BILINEAR),
}
# vit_h16_no_cls_448px.yaml of the same datasets
VISSL_TEST_448 = {
    "imagenet": (512, 448, BICUBIC),
    "cifar100": (512, 448, BICUBIC),
    "places205": (512, 448, BILINEAR),
    "inat18": (512, 448, BILINEAR),
    "clevr_count": ((448, 448), None, BILINEAR),
}


def striped(w: int = 400, h: int = 300) -> Image.Image:
    """RGBA image with a red band on the far left and a gradient: survives resizing, not a center crop."""
    arr = np.zeros((h, w, 4), dtype=np.uint8)
    arr[..., 0] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]
    arr[..., 1] = np.linspace(0, 255, h, dtype=np.uint8)[:, None]
    arr[..., 2], arr[..., 3] = 128, 255
    arr[:, : w // 8, :3] = (255, 0, 0)
    return Image.fromarray(arr, "RGBA")


def reference(img: Image.Image, resize, crop, filt) -> np.ndarray:
    """The VISSL transform written with PIL only: resize, center crop, /255, normalise (HWC)."""
    img = img.convert("RGB")
    if crop is None:
        out = img.resize(resize, filt)
    else:
        w, h = img.size
        size = (resize, int(resize * h / w)) if w <= h else (int(resize * w / h), resize)
        out = img.resize(size, filt)
        left, top = round((size[0] - crop) / 2), round((size[1] - crop) / 2)
        out = out.crop((left, top, left + crop, top + crop))
    return (np.asarray(out, dtype=np.float64) / 255 - MEAN) / STD


@pytest.mark.parametrize(("table", "img_size"), [(VISSL_TEST, 224), (VISSL_TEST_448, 448)])
def test_eval_transforms_equal_the_vissl_configs(table, img_size):
    img = striped()
    for name, (resize, crop, filt) in table.items():
        out = eval_transform(name, img_size)(img)
        assert out.shape == (3, img_size, img_size) and out.dtype == torch.float32, name
        expected = reference(img, resize, crop, filt)
        assert np.abs(out.permute(1, 2, 0).numpy() - expected).max() < 1e-5, name
        other = BILINEAR if filt == BICUBIC else BICUBIC  # the test can tell the interpolations apart
        assert np.abs(out.permute(1, 2, 0).numpy() - reference(img, resize, crop, other)).max() > 1e-2, name


def test_cifar100_is_upsampled_then_center_cropped():
    """A 32×32 CIFAR image: Resize 256 then CenterCrop 224 drops a 2-pixel border (Resize 224 would keep it)."""
    arr = np.full((32, 32, 3), 128, dtype=np.uint8)
    arr[:, :1] = (255, 0, 0)  # column 0 = output columns 0-7 of 256; the crop starts at column 16
    img = Image.fromarray(arr)
    grey = torch.tensor((128 / 255 - MEAN) / STD, dtype=torch.float32)
    assert torch.allclose(eval_transform("cifar100")(img)[:, 112, 0], grey, atol=0.15)  # bicubic ringing only
    whole = reference(img, (224, 224), None, BICUBIC)[112, 0]
    assert whole[0] > 2.0  # the old Resize (224, 224) showed the red column


def test_clevr_keeps_the_whole_image_and_other_sizes_scale():
    red = torch.tensor((np.array([1.0, 0, 0]) - MEAN) / STD, dtype=torch.float32)
    for name in ("clevr_count", "clevr_dist"):
        out = eval_transform(name, 64)(striped())
        assert out.shape == (3, 64, 64) and torch.allclose(out[:, 32, 2], red, atol=1e-3)
        train = train_transform(name, 64)(striped())
        assert torch.allclose(train[:, 32, 2], red, atol=1e-3) or torch.allclose(train[:, 32, 61], red, atol=1e-3)
    # a 64-px grid: resize round(256 * 64 / 224) = 73, crop 64 (the ratio both VISSL sizes share)
    assert describe_transform("places205", 64)["resize"] == 73
    expected = reference(striped(), 73, 64, BILINEAR)
    assert np.abs(eval_transform("places205", 64)(striped()).permute(1, 2, 0).numpy() - expected).max() < 1e-5


def test_train_transforms_follow_the_configs():
    """RandomResizedCrop with the config's interpolation (bicubic for ImageNet/CIFAR, default for Places/iNat)."""
    for name, mode in (("imagenet", "bicubic"), ("cifar100", "bicubic"), ("places205", "bilinear"), ("inat18", "bilinear")):
        rrc = [t for t in train_transform(name, 32).transforms if type(t).__name__ == "RandomResizedCrop"]
        assert len(rrc) == 1 and rrc[0].interpolation.value == mode and rrc[0].size == (32, 32), name
    torch.manual_seed(0)
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (80, 90, 3), dtype=np.uint8))
    a, b = train_transform("imagenet", 32)(img), train_transform("imagenet", 32)(img)
    assert a.shape == (3, 32, 32) and not torch.equal(a, b)


def test_describe_transform_separates_what_changes_features():
    base = describe_transform("imagenet")
    assert base == describe_transform("cifar100")  # the same VISSL transform
    assert base != describe_transform("places205") and base != describe_transform("clevr_count")
    assert base != describe_transform("imagenet", 448) and base != describe_transform("imagenet", train=True)
    assert describe_transform("inat18") == describe_transform("places205")
    assert describe_transform("folder") == base and describe_transform("hf:user/data") == base
    json.dumps(base)  # recorded in result JSONs


def test_a_changed_transform_invalidates_cached_features(tmp_path, monkeypatch):
    """The feature-cache key holds the transform's repr: features extracted with the old (pre-VISSL)
    CIFAR100 transform, Resize (224, 224) bicubic, are never served for the new one."""
    from timm.models.vision_transformer import VisionTransformer

    from ijepa_eval.data import get_dataset
    from ijepa_eval.data.synthetic import write_cifar100
    from ijepa_eval.encoders import encoder_from_vit
    from ijepa_eval.features import cache_entry_for

    vit = VisionTransformer(img_size=32, patch_size=16, embed_dim=24, depth=1, num_heads=2, num_classes=0,
                            class_token=False, global_pool="avg", fc_norm=False)
    enc, ds = encoder_from_vit(vit), get_dataset("cifar100", write_cifar100(tmp_path / "c", 4, 4), "test")
    key = cache_entry_for(enc, ds, cache_dir=tmp_path)[0].key
    monkeypatch.setitem(transforms_module.SPECS, "cifar100", transforms_module.TransformSpec("resize", "bicubic"))
    old = cache_entry_for(enc, ds, cache_dir=tmp_path)[0].key
    monkeypatch.setitem(transforms_module.SPECS, "cifar100", transforms_module.TransformSpec("crop", "bilinear"))
    assert len({key, old, cache_entry_for(enc, ds, cache_dir=tmp_path)[0].key}) == 3


# ---------------------------------------------------------------------------------------------------------
# uint8 transforms (normalize=False), device-side normalisation, the tensor backend's resize


def old_float_pipeline(name: str, img_size: int):
    """The transform before uint8 loaders (torchvision v1: ... ToTensor, Normalize), written out here."""
    from torchvision import transforms as T

    spec = transforms_module.transform_spec(name)
    mode = T.InterpolationMode.BICUBIC if spec.interpolation == "bicubic" else T.InterpolationMode.BILINEAR
    size = transforms_module.resize_size(img_size)
    geometry = ([T.Resize((img_size, img_size), interpolation=mode)] if spec.geometry == "resize"
                else [T.Resize(size, interpolation=mode), T.CenterCrop(img_size)])
    return T.Compose([T.Lambda(transforms_module.to_rgb), *geometry, T.ToTensor(), T.Normalize(list(MEAN), list(STD))])


@pytest.mark.parametrize("name", ["imagenet", "places205", "clevr_count", "cifar100"])
def test_uint8_then_device_normalisation_equals_the_float_pipeline_bit_for_bit(name):
    """PIL backend: uint8 [3, s, s] in the loader, Normalize on the batch = the old per-image float path."""
    from ijepa_eval.data.device import DevicePreprocess

    rng = np.random.default_rng(0)
    images = [striped(), Image.fromarray(rng.integers(0, 255, (41, 29, 3), dtype=np.uint8)),
              Image.fromarray(rng.integers(0, 255, (300, 451, 3), dtype=np.uint8))]
    uint8 = torch.stack([eval_transform(name, 64, normalize=False)(img) for img in images])
    assert uint8.dtype == torch.uint8 and uint8.shape == (3, 3, 64, 64)
    old = torch.stack([old_float_pipeline(name, 64)(img) for img in images])
    assert torch.equal(DevicePreprocess("cpu")(uint8), old)
    assert torch.equal(torch.stack([eval_transform(name, 64)(img) for img in images]), old)


def test_tensor_backend_resize_is_within_two_levels_of_pils():
    """torchvision's antialiased uint8 kernels follow PIL's filters: the tensor path's pixels differ by at
    most 2 (of 255) from the PIL path on photo-like images, on average by far less than 1."""
    from ijepa_eval.data.decode import to_uint8
    from ijepa_eval.data.synthetic import photo_like

    rng = np.random.default_rng(0)
    for name in ("imagenet", "places205", "clevr_count"):
        diffs = []
        for _ in range(3):
            img = Image.fromarray(photo_like(1, rng, int(rng.integers(200, 500)), int(rng.integers(180, 400))))
            pil = eval_transform(name, 224, normalize=False)(img).int()
            tensor = eval_transform(name, 224, normalize=False)(to_uint8(img)).int()
            diffs.append((pil - tensor).abs())
        diffs = torch.stack(diffs)
        assert diffs.max() <= 2 and diffs.float().mean() < 0.05, (name, diffs.max(), diffs.float().mean())


def test_train_transforms_take_pil_and_uint8_tensors():
    from ijepa_eval.data.decode import to_uint8

    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (80, 90, 3), dtype=np.uint8))
    for source in (img, to_uint8(img)):
        out = train_transform("imagenet", 32, normalize=False)(source)
        assert out.shape == (3, 32, 32) and out.dtype == torch.uint8
