"""``get_dataset``: one name -> one source function, each reading the dataset's native on-disk layout."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

from ijepa_eval.data import cifar, clevr, folders, hf, lists, shift, subsets
from ijepa_eval.data.base import ImageDataset
from ijepa_eval.data.roots import resolve_root
from ijepa_eval.errors import DatasetError, unknown_choice

# name -> (source(root, split, **options), valid splits, extra options it accepts)
SOURCES: dict[str, tuple[Callable[..., ImageDataset], tuple[str, ...], tuple[str, ...]]] = {
    "imagenet": (folders.imagenet, ("train", "val"), ()),
    "imagenet_1pct": (
        functools.partial(subsets.imagenet_subset, "imagenet_1pct"), ("train", "val"),
        ("split_file", "allow_custom_split"),
    ),
    "imagenet_10pct": (
        functools.partial(subsets.imagenet_subset, "imagenet_10pct"), ("train", "val"),
        ("split_file", "allow_custom_split"),
    ),
    "cifar100": (cifar.cifar100, cifar.SPLITS, ()),
    "places205": (lists.places205, ("train", "val"), ()),
    "inat18": (lists.inat18, ("train", "val"), ()),
    "clevr_count": (functools.partial(clevr.clevr, "clevr_count"), clevr.SPLITS, ()),
    "clevr_dist": (functools.partial(clevr.clevr, "clevr_dist"), clevr.SPLITS, ()),
    "folder": (folders.folder, ("train", "val", "test"), ()),
    # distribution-shift test sets, labelled in the head's class space (``classes``, default ImageNet-1k)
    "imagenet_v2": (shift.imagenet_v2, tuple(shift.V2_VARIANTS), ("classes",)),
    "imagenet_a": (functools.partial(shift.imagenet_subset, "imagenet_a"), ("test",), ("classes", "subset")),
    "imagenet_r": (functools.partial(shift.imagenet_subset, "imagenet_r"), ("test",), ("classes", "subset")),
    "imagenet_sketch": (shift.imagenet_sketch, ("test",), ("classes",)),
    "imagenet_c": (shift.imagenet_c, shift.C_SPLITS, ("classes",)),
}
HF_ROOTED = ("imagenet_sketch",)  # sources that also read an ``hf:<id or path>`` root
HF_PREFIX = "hf:"
HF_OPTIONS = ("image_column", "label_column", "num_classes", "cache_dir")
COMMON_OPTIONS = ("skip_bad_images", "decode")
DATASET_NAMES = (*SOURCES, f"{HF_PREFIX}<hub id or local path>")


def get_dataset(
    name: str,
    root: str | os.PathLike | None = None,
    split: str = "train",
    transform: Callable | None = None,
    **options,
) -> ImageDataset:
    """A torch Dataset of ``(image, int label)`` with ``num_classes``, ``labels``, ``fingerprint()``.

    ``root`` defaults to $IJEPA_EVAL_DATA/<family> or the data config (see ``ijepa_eval.data.roots``).
    Options: ``skip_bad_images`` and ``decode`` (all: ``pil`` | ``tensor`` | ``gpu``, see
    ``ijepa_eval.data.decode``), ``split_file``/``allow_custom_split`` (imagenet subsets),
    ``image_column``/``label_column``/``num_classes``/``cache_dir`` (hf:), ``classes`` (the head's label
    space, shift sets) and ``subset`` (imagenet_a / imagenet_r). ``imagenet_sketch`` also takes
    ``root="hf:<id or path>"``.
    """
    if name.startswith(HF_PREFIX):
        source = name[len(HF_PREFIX):] or (str(root) if root is not None else "")
        if not source:
            raise DatasetError("dataset 'hf:' needs a hub id or local path, e.g. hf:uoft-cs/cifar100")
        _check_options(name, options, HF_OPTIONS)
        return hf.hf(source, split, transform=transform, **options)
    if name not in SOURCES:
        raise DatasetError(unknown_choice("dataset", name, DATASET_NAMES))
    source, splits, extra = SOURCES[name]
    if split not in splits:
        raise DatasetError(unknown_choice(f"split for dataset '{name}'", split, splits))
    _check_options(name, options, extra)
    if not (name in HF_ROOTED and str(root).startswith(HF_PREFIX)):
        root = resolve_root(name, root)
    return source(root, split, transform=transform, **options)


def _check_options(name: str, options: dict, extra: tuple[str, ...]) -> None:
    allowed = (*COMMON_OPTIONS, *extra)
    for key in options:
        if key not in allowed:
            raise DatasetError(unknown_choice(f"option for dataset '{name}'", key, allowed))
