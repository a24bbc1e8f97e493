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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from PIL import Image
from torchvision import transforms as T

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
    """PIL images in any mode (CLEVR's RGBA, grayscale) as RGB: every transform starts with it."""
    return img.convert("RGB") if getattr(img, "mode", "RGB") != "RGB" else img


def _mode(spec: TransformSpec) -> T.InterpolationMode:
    return T.InterpolationMode.BICUBIC if spec.interpolation == "bicubic" else T.InterpolationMode.BILINEAR


def _tail() -> list:
    return [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]


def eval_transform(name: str, img_size: int = 224) -> T.Compose:
    """Deterministic transform the features are extracted with (PIL image -> normalised [3, s, s] tensor)."""
    spec = transform_spec(name)
    mode = _mode(spec)
    if spec.geometry == "resize":
        geometry = [T.Resize((img_size, img_size), interpolation=mode)]
    else:
        geometry = [T.Resize(resize_size(img_size), interpolation=mode), T.CenterCrop(img_size)]
    return T.Compose([T.Lambda(to_rgb), *geometry, *_tail()])


def train_transform(name: str, img_size: int = 224) -> T.Compose:
    """Probe augmentation of the VISSL config: RandomResizedCrop + flip; resize + flip where crops change labels."""
    spec = transform_spec(name)
    mode = _mode(spec)
    if spec.geometry == "resize":
        geometry = [T.Resize((img_size, img_size), interpolation=mode)]
    else:
        geometry = [T.RandomResizedCrop(img_size, interpolation=mode)]
    return T.Compose([T.Lambda(to_rgb), *geometry, T.RandomHorizontalFlip(), *_tail()])


def describe_transform(name: str, img_size: int = 224, train: bool = False) -> dict:
    """Everything about a transform that changes features (recorded in results; the cache keys the repr)."""
    spec = transform_spec(name)
    desc = {"kind": spec.geometry, "img_size": img_size, "interpolation": spec.interpolation,
            "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "train": train}
    if spec.geometry == "crop" and not train:
        desc["resize"] = resize_size(img_size)
    return desc


def vjepa_transform(img_size: int = 224, train: bool = False) -> T.Compose:
    """V-JEPA's image-eval transforms (facebookresearch/jepa ``evals/image_classification_frozen/eval.py``,
    ``make_dataloader``): train = timm ``create_transform(auto_augment='original', interpolation='bicubic',
    re_prob=0.25, re_mode='pixel', re_count=1)`` (RandomResizedCrop 0.08-1 + flip + AutoAugment + random
    erasing); eval = ``Resize(int(s * 256 / 224))`` (torchvision's default bilinear) + ``CenterCrop(s)``."""
    if train:
        from timm.data import create_transform

        timm_tf = create_transform(input_size=img_size, is_training=True, auto_augment="original",
                                   interpolation="bicubic", re_prob=0.25, re_mode="pixel", re_count=1,
                                   mean=IMAGENET_MEAN, std=IMAGENET_STD)
        return T.Compose([T.Lambda(to_rgb), timm_tf])
    geometry = [T.Resize(int(img_size * 256 / 224)), T.CenterCrop(img_size)]
    return T.Compose([T.Lambda(to_rgb), *geometry, *_tail()])
