"""Evaluation and probe-training transforms as VISSL's ViT-H benchmark configs define them (DESIGN §5).

Reference: facebookresearch/vissl ``configs/config/benchmark/linear_image_classification/<dataset>/``
``models/vit_h16_no_cls.yaml`` (224 px) and ``vit_h16_no_cls_448px.yaml`` over the dataset's base yaml
``eval_resnet_8gpu_transfer_<dataset>_linear.yaml``. Per dataset (TEST = the features we extract):

==============  ===========================================  =========================================
dataset         TEST                                         TRAIN (``aug=paper``)
==============  ===========================================  =========================================
imagenet (1%)   Resize 256 bicubic, CenterCrop 224           RandomResizedCrop 224 bicubic, flip
cifar100        Resize 256 bicubic, CenterCrop 224           RandomResizedCrop 224 bicubic, flip
places205       Resize 256 bilinear, CenterCrop 224          RandomResizedCrop 224 bilinear, flip
inat18          Resize 256 bilinear, CenterCrop 224          RandomResizedCrop 224 bilinear, flip
clevr_*         Resize (224, 224) bilinear (no crop)         Resize (224, 224) bilinear, flip
==============  ===========================================  =========================================

"bilinear" is where the config names no ``interpolation`` and torchvision's default applies. The 448-px
configs use Resize 512 / CenterCrop 448 (CLEVR: Resize (448, 448)) with the same interpolations. For
any other input size ``s`` (a 64-px demo model, a 384-px model) the resize is round(256·s/224): the ratio
both VISSL sizes share (256/224 = 512/448). Datasets without a VISSL config (``folder``, ``hf:*``) get the
ImageNet transform. Every image is converted to RGB first (CLEVR PNGs are RGBA).

``normalize=False`` ends a transform at uint8 [3, s, s] (timm's ``use_prefetcher``): the loader ships 4×
fewer bytes and ``ijepa_eval.data.device`` converts and normalises on the device. The geometry is
torchvision's v2 ops, which resize a PIL image with PIL (``decode: pil``, the reference) and a uint8 tensor
with torch's antialiased kernels (``decode: tensor``/``gpu``; PIL-like filters, pixels within ±2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from PIL import Image
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
Geometry = Literal["crop", "resize"]  # resize shorter side + center crop | whole image to s×s
Interpolation = Literal["bicubic", "bilinear"]


@dataclass(frozen=True)
class TransformSpec:
    geometry: Geometry
    interpolation: Interpolation


IMAGENET_SPEC = TransformSpec("crop", "bicubic")
# Datasets whose VISSL config differs from ImageNet's; CLEVR crops would cut objects and change the label.
SPECS = {
    "cifar100": TransformSpec("crop", "bicubic"),
    "places205": TransformSpec("crop", "bilinear"),
    "inat18": TransformSpec("crop", "bilinear"),
    "clevr_count": TransformSpec("resize", "bilinear"),
    "clevr_dist": TransformSpec("resize", "bilinear"),
}


def transform_spec(name: str) -> TransformSpec:
    """The VISSL geometry and interpolation of dataset ``name`` (ImageNet's for datasets VISSL lacks)."""
    return SPECS.get(name, IMAGENET_SPEC)


def resize_size(img_size: int) -> int:
    """Shorter-side resize before the center crop: 256 for 224, 512 for 448, round(256·s/224) else."""
    return round(256 * img_size / 224)


def to_rgb(img: Image.Image) -> Image.Image:
    """PIL images in any mode (CLEVR's RGBA, grayscale) as RGB: every transform starts with it (tensors from
    the decode backends are RGB already and pass unchanged)."""
    return img.convert("RGB") if isinstance(img, Image.Image) and img.mode != "RGB" else img


class Normalize:
    """uint8 [..., 3, H, W] -> float32 normalised with ToTensor's ``/ 255`` then Normalize's ``(x - mean) / std``:
    the same float operations in the same order, so the numbers equal the float pipeline's bit for bit on CPU
    (timm's prefetcher folds 255 into mean and std instead, which rounds differently). Works on batches and
    on any device."""

    def __init__(self, mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD) -> None:
        self.mean, self.std = tuple(mean), tuple(std)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(torch.float32).div(255)
        mean = torch.as_tensor(self.mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        std = torch.as_tensor(self.std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        return x.sub_(mean).div_(std)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mean={list(self.mean)}, std={list(self.std)})"


def _mode(spec: TransformSpec) -> v2.InterpolationMode:
    return v2.InterpolationMode.BICUBIC if spec.interpolation == "bicubic" else v2.InterpolationMode.BILINEAR


def _compose(geometry: list, normalize: bool) -> v2.Compose:
    tail = [Normalize()] if normalize else []
    return v2.Compose([v2.Lambda(to_rgb), *geometry, v2.PILToTensor(), *tail])


def eval_geometry(name: str, img_size: int = 224) -> list:
    """The deterministic resize (and crop) of dataset ``name``: PIL or uint8 tensor in, the same kind out."""
    spec = transform_spec(name)
    mode = _mode(spec)
    if spec.geometry == "resize":
        return [v2.Resize((img_size, img_size), interpolation=mode, antialias=True)]
    return [v2.Resize(resize_size(img_size), interpolation=mode, antialias=True), v2.CenterCrop(img_size)]


def eval_transform(name: str, img_size: int = 224, *, normalize: bool = True) -> v2.Compose:
    """Deterministic transform the features are extracted with: image -> normalised float [3, s, s], or
    uint8 [3, s, s] with ``normalize=False``."""
    return _compose(eval_geometry(name, img_size), normalize)


def train_transform(name: str, img_size: int = 224, *, normalize: bool = True) -> v2.Compose:
    """Probe augmentation of the VISSL config: RandomResizedCrop + flip; resize + flip where crops change labels."""
    spec = transform_spec(name)
    mode = _mode(spec)
    if spec.geometry == "resize":
        geometry = [v2.Resize((img_size, img_size), interpolation=mode, antialias=True)]
    else:
        geometry = [v2.RandomResizedCrop(img_size, interpolation=mode, antialias=True)]
    return _compose([*geometry, v2.RandomHorizontalFlip()], normalize)


def describe_transform(name: str, img_size: int = 224, train: bool = False) -> dict:
    """Everything about a transform that changes features (recorded in results; the cache keys the repr)."""
    spec = transform_spec(name)
    desc = {"kind": spec.geometry, "img_size": img_size, "interpolation": spec.interpolation,
            "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "train": train}
    if spec.geometry == "crop" and not train:
        desc["resize"] = resize_size(img_size)
    return desc


def vjepa_transform(img_size: int = 224, train: bool = False, *, normalize: bool = True) -> v2.Compose:
    """V-JEPA's image-eval transforms (facebookresearch/jepa ``evals/image_classification_frozen/eval.py``,
    ``make_dataloader``): train = timm ``create_transform(auto_augment='original', interpolation='bicubic',
    re_prob=0.25, re_mode='pixel', re_count=1)`` (RandomResizedCrop 0.08-1 + flip + AutoAugment + random
    erasing); eval = ``Resize(int(s * 256 / 224))`` (torchvision's default bilinear) + ``CenterCrop(s)``.

    ``normalize=False`` stops both at uint8 (train: timm's ``use_prefetcher`` variant, without the erasing):
    the device normalises, and erases the training batch with ``vjepa_erasing`` as timm's PrefetchLoader does.
    """
    if train:
        from timm.data import create_transform

        timm_tf = create_transform(input_size=img_size, is_training=True, auto_augment="original",
                                   interpolation="bicubic", re_prob=VJEPA_ERASING["probability"],
                                   re_mode=VJEPA_ERASING["mode"], re_count=VJEPA_ERASING["max_count"],
                                   mean=IMAGENET_MEAN, std=IMAGENET_STD, use_prefetcher=not normalize)
        return v2.Compose([v2.Lambda(to_rgb), timm_tf])
    return _compose([v2.Resize(int(img_size * 256 / 224), antialias=True), v2.CenterCrop(img_size)], normalize)


VJEPA_ERASING = {"probability": 0.25, "mode": "pixel", "max_count": 1}  # V-JEPA's re_prob / re_mode / re_count


def vjepa_erasing(device: torch.device | str):
    """V-JEPA's random erasing, on normalised batches on ``device`` (timm's ``RandomErasing``, which its
    PrefetchLoader applies after normalising): the rest of ``vjepa_transform(s, train=True, normalize=False)``."""
    from timm.data.random_erasing import RandomErasing

    return RandomErasing(**VJEPA_ERASING, device=device)
