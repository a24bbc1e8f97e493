"""Evaluation and probe-training transforms of the paper (DESIGN §5), plus a description for cache keys.

ImageNet-style data: resize the shorter side to 256·s/224 (bicubic), center-crop s. CIFAR100 and CLEVR are
resized straight to s×s (no crop: cropping would cut CLEVR objects and change the count/distance label).
"""

from __future__ import annotations

from typing import Literal

from torchvision import transforms as T

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
Kind = Literal["crop", "resize"]
KINDS = ("crop", "resize")


def transform_kind(name: str) -> Kind:
    """'resize' (whole image to s×s) for CIFAR100 and CLEVR, 'crop' (resize shorter side + center crop) else."""
    return "resize" if name == "cifar100" or name.startswith("clevr") else "crop"


def _to_rgb(img):
    return img.convert("RGB") if getattr(img, "mode", "RGB") != "RGB" else img


def _tail() -> list:
    return [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]


def eval_transform(name: str, img_size: int = 224) -> T.Compose:
    """Deterministic transform the features are extracted with (PIL image -> normalised [3, s, s] tensor)."""
    bicubic = T.InterpolationMode.BICUBIC
    if transform_kind(name) == "resize":
        geometry = [T.Resize((img_size, img_size), interpolation=bicubic)]
    else:
        geometry = [T.Resize(round(256 * img_size / 224), interpolation=bicubic), T.CenterCrop(img_size)]
    return T.Compose([T.Lambda(_to_rgb), *geometry, *_tail()])


def train_transform(name: str, img_size: int = 224) -> T.Compose:
    """Paper probe augmentation: RandomResizedCrop + flip; resize + flip where cropping changes labels."""
    bicubic = T.InterpolationMode.BICUBIC
    if transform_kind(name) == "resize":
        geometry = [T.Resize((img_size, img_size), interpolation=bicubic)]
    else:
        geometry = [T.RandomResizedCrop(img_size, interpolation=bicubic)]
    return T.Compose([T.Lambda(_to_rgb), *geometry, T.RandomHorizontalFlip(), *_tail()])


def describe_transform(name: str, img_size: int = 224, train: bool = False) -> dict:
    """Everything about a transform that changes features: goes into the feature-cache key."""
    kind = transform_kind(name)
    desc = {"kind": kind, "img_size": img_size, "interpolation": "bicubic", "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD), "train": train}
    if kind == "crop" and not train:
        desc["resize"] = round(256 * img_size / 224)
    return desc
