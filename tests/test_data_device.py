"""Device-side preprocessing: uint8 batches become the float batches the per-image pipeline made."""

import numpy as np
import pytest
import torch

from ijepa_eval.data import eval_transform, get_dataset
from ijepa_eval.data.device import DevicePreprocess, collate_images, collate_uint8, prefetch
from ijepa_eval.data.synthetic import write_imagenet_like


@pytest.fixture(scope="module")
def imagenet_like(tmp_path_factory):
    return write_imagenet_like(tmp_path_factory.mktemp("in"), n_classes=2, n_train_per_class=3, n_val_per_class=0)


def batch_of(root, backend, transform):
    ds = get_dataset("imagenet", root, "train", decode=backend, transform=transform)
    return collate_uint8([ds[i] for i in range(len(ds))])


def test_gpu_backend_on_cpu_equals_the_tensor_backend(imagenet_like):
    """The device path (batched decode, per-image geometry there) computes what loader workers compute."""
    geometry = eval_transform("imagenet", 64, normalize=False)
    tensor_images, labels = batch_of(imagenet_like, "tensor", geometry)
    raw, raw_labels = batch_of(imagenet_like, "gpu", None)
    assert isinstance(raw, list) and all(item.ndim == 1 for item in raw)  # encoded JPEGs travel
    prep = DevicePreprocess("cpu", transform=geometry)
    assert torch.equal(prep(raw), DevicePreprocess("cpu")(tensor_images))
    assert torch.equal(labels, raw_labels)


def test_pil_backend_batches_equal_the_float_transform(imagenet_like):
    images, _ = batch_of(imagenet_like, "pil", eval_transform("imagenet", 64, normalize=False))
    ds = get_dataset("imagenet", imagenet_like, "train", transform=eval_transform("imagenet", 64))
    assert images.dtype == torch.uint8
    assert torch.equal(DevicePreprocess("cpu")(images), torch.stack([ds[i][0] for i in range(len(ds))]))


def test_erasing_and_layout_options():
    x = torch.full((2, 3, 8, 8), 128, dtype=torch.uint8)
    zeroed = DevicePreprocess("cpu", erasing=lambda t: t.mul(0), channels_last=True)(x)
    assert zeroed.abs().sum() == 0 and zeroed.is_contiguous(memory_format=torch.channels_last)
    floats = torch.randn(2, 3, 8, 8)
    assert torch.equal(DevicePreprocess("cpu")(floats), floats)  # a float transform normalised already
    with pytest.raises(TypeError, match="takes uint8 images"):
        DevicePreprocess("cpu")(x.int())


def test_collate_keeps_odd_sized_images_as_a_list():
    same = [torch.zeros(3, 4, 4, dtype=torch.uint8)] * 2
    assert collate_images(same).shape == (2, 3, 4, 4)
    assert isinstance(collate_images([same[0], torch.zeros(3, 5, 4, dtype=torch.uint8)]), list)
    assert isinstance(collate_images([torch.zeros(10, dtype=torch.uint8)] * 2), list)


def test_prefetch_prepares_every_batch_in_order_on_cpu():
    batches = [(torch.full((1, 3, 2, 2), i, dtype=torch.uint8), torch.tensor([i])) for i in range(4)]
    prep = DevicePreprocess("cpu")
    out = list(prefetch(batches, lambda b: (prep(b[0]), b[1]), "cpu"))
    assert [int(y) for _, y in out] == [0, 1, 2, 3]
    assert torch.equal(out[2][0], prep(batches[2][0]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_prefetch_on_cuda_matches_cpu(imagenet_like):
    images, _ = batch_of(imagenet_like, "tensor", eval_transform("imagenet", 64, normalize=False))
    prep = DevicePreprocess("cuda")
    (out,) = list(prefetch([images], prep, "cuda"))
    assert torch.allclose(out.cpu(), DevicePreprocess("cpu")(images), atol=1e-6)
    raw, _ = batch_of(imagenet_like, "gpu", None)
    on_gpu = DevicePreprocess("cuda", transform=eval_transform("imagenet", 64, normalize=False))(raw).cpu()
    assert (on_gpu - DevicePreprocess("cpu")(images)).abs().max() < 0.2  # nvJPEG's IDCT differs from libjpeg's
    assert np.isfinite(on_gpu.numpy()).all()


def test_per_item_erasing_does_not_replay_the_crop_draws_of_its_seed():
    """The loader crops each image under its item seed (SeededItems); erasing under that same seed would redraw
    the crop's first random.random() as its erase-or-not draw, erasing exactly the smallest crops (V-JEPA's
    re_prob 0.25: the bottom quarter of RandomResizedCrop's scale). Erasing's own stream keeps them independent."""
    import random

    from timm.data.random_erasing import RandomErasing

    seeds = list(range(4000))
    images = torch.zeros(len(seeds), 3, 8, 8, dtype=torch.uint8)
    prep = DevicePreprocess("cpu", erasing=RandomErasing(probability=0.25, mode="pixel", device="cpu"))
    erased_batch = prep(images, seeds)
    erased = (erased_batch != DevicePreprocess("cpu")(images)).flatten(1).any(1).numpy()
    first_draw = []  # what timm's RandomResizedCrop draws first under each item seed: its scale
    for seed in seeds:
        random.seed(seed)
        first_draw.append(random.random())
    first_draw = np.array(first_draw)
    assert 0.22 < erased.mean() < 0.28  # timm's probability
    # independent of the crop: erased images' first draws are uniform on [0, 1], not all below 0.25
    assert 0.45 < first_draw[erased].mean() < 0.55 and (first_draw[erased] > 0.25).mean() > 0.7
    assert torch.equal(prep(images, seeds), erased_batch)  # still a function of the item seeds alone
