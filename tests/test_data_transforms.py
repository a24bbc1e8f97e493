"""Eval/train transforms vs the paper's recipe (DESIGN §5), computed independently with PIL."""

import numpy as np
import pytest
import torch
from PIL import Image

from ijepa_eval.data import describe_transform, eval_transform, train_transform

MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])


def striped(w: int = 400, h: int = 200) -> Image.Image:
    """Grey RGBA image with a red band on the far left: survives resizing, not a center crop."""
    arr = np.full((h, w, 4), 128, dtype=np.uint8)
    arr[:, : w // 8, :3] = (255, 0, 0)
    return Image.fromarray(arr, "RGBA")


def test_imagenet_eval_resizes_shorter_side_then_center_crops():
    img = striped()
    out = eval_transform("imagenet")(img)
    assert out.shape == (3, 224, 224) and out.dtype == torch.float32
    ref = img.convert("RGB").resize((512, 256), Image.Resampling.BICUBIC)
    ref = np.asarray(ref.crop((144, 16, 368, 240)), dtype=np.float64) / 255
    expected = (ref - MEAN) / STD
    assert np.abs(out.permute(1, 2, 0).numpy() - expected).max() < 0.05
    # the red band was cropped away: every pixel is the grey value
    assert torch.allclose(out[:, 100, 0], torch.tensor((128 / 255 - MEAN) / STD, dtype=torch.float32), atol=1e-3)


@pytest.mark.parametrize("name", ["cifar100", "clevr_count", "clevr_dist"])
def test_resize_only_datasets_keep_the_whole_image(name):
    out = eval_transform(name, 64)(striped())
    assert out.shape == (3, 64, 64)
    red = torch.tensor((np.array([1.0, 0, 0]) - MEAN) / STD, dtype=torch.float32)
    assert torch.allclose(out[:, 32, 2], red, atol=1e-3)
    train = train_transform(name, 64)(striped())
    assert train.shape == (3, 64, 64)
    assert torch.allclose(train[:, 32, 2], red, atol=1e-3) or torch.allclose(train[:, 32, 61], red, atol=1e-3)


def test_448_models_resize_to_512():
    desc = describe_transform("imagenet", 448)
    assert desc["resize"] == 512 and desc["img_size"] == 448
    assert eval_transform("places205", 448)(striped(600, 500)).shape == (3, 448, 448)


def test_train_transform_is_random_for_crop_datasets():
    torch.manual_seed(0)
    t = train_transform("imagenet", 32)
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (80, 90, 3), dtype=np.uint8))
    a, b = t(img), t(img)
    assert a.shape == (3, 32, 32) and not torch.equal(a, b)


def test_describe_transform_separates_what_changes_features():
    base = describe_transform("imagenet")
    assert base != describe_transform("cifar100") and base != describe_transform("imagenet", 448)
    assert base != describe_transform("imagenet", train=True)
    assert describe_transform("inat18") == base
    import json

    json.dumps(base)  # goes into a JSON cache key
