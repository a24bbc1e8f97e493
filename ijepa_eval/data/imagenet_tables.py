"""Reference tables of the ImageNet shift sets: class lists, the -C corruption list, AlexNet's -C errors.

The tables live in ``data/tables/`` as plain text with their source in a ``#`` header, so a reader can
check each against the code it was read from:

- ``imagenet_a_wnids.txt`` / ``imagenet_r_wnids.txt``: the 200 classes of ImageNet-A / -R, sorted. Their
  positions in the sorted ImageNet-1k wnids are the logits the datasets' own ``eval.py`` keeps
  (``indices_in_1k`` / ``imagenet_r_mask``); their order is the datasets' ImageFolder label order.
- ``imagenet_c_alexnet_errors.csv``: AlexNet's error per corruption (mean over severities 1-5), the
  normaliser of the mean Corruption Error (mCE).

The ImageNet-1k class list itself is timm's (``timm.data.ImageNetInfo``: the 1000 wnids, sorted, which is the
class order of ImageNet's train/ folders and of every ImageNet-1k head).
"""

from __future__ import annotations

import csv
import functools
from importlib import resources

from ijepa_eval.errors import DatasetError

# ImageNet-C (hendrycks/robustness ImageNet-C/create_c/make_imagenet_c.py, the Zenodo release): 15 benchmark
# corruptions in the paper's order, grouped as the release's tarballs are, and 4 held-out "extra" ones.
CORRUPTION_GROUPS = {
    "noise": ("gaussian_noise", "shot_noise", "impulse_noise"),
    "blur": ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur"),
    "weather": ("snow", "frost", "fog", "brightness"),
    "digital": ("contrast", "elastic_transform", "pixelate", "jpeg_compression"),
    "extra": ("speckle_noise", "gaussian_blur", "spatter", "saturate"),
}
CORRUPTIONS = tuple(c for group, names in CORRUPTION_GROUPS.items() if group != "extra" for c in names)
EXTRA_CORRUPTIONS = CORRUPTION_GROUPS["extra"]
SEVERITIES = (1, 2, 3, 4, 5)


def _table_lines(name: str) -> list[str]:
    text = resources.files("ijepa_eval.data").joinpath("tables", name).read_text()
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


@functools.cache
def imagenet1k_wnids() -> tuple[str, ...]:
    """The 1000 ImageNet-1k wnids in class-index order (sorted), from timm."""
    from timm.data import ImageNetInfo

    return tuple(ImageNetInfo("imagenet-1k").label_names())


@functools.cache
def imagenet_a_wnids() -> tuple[str, ...]:
    return tuple(_table_lines("imagenet_a_wnids.txt"))


@functools.cache
def imagenet_r_wnids() -> tuple[str, ...]:
    return tuple(_table_lines("imagenet_r_wnids.txt"))


@functools.cache
def alexnet_errors() -> dict[str, float]:
    """{corruption: AlexNet top-1 error as a fraction}, for the 15 benchmark corruptions."""
    rows = list(csv.DictReader(_table_lines("imagenet_c_alexnet_errors.csv")))
    return {row["corruption"]: float(row["alexnet_error"]) for row in rows}


def subset_indices(subset: tuple[str, ...] | list[str], classes: tuple[str, ...] | list[str], what: str) -> list[int]:
    """Positions of ``subset``'s wnids in ``classes`` (the head's label space), ascending.

    A DatasetError when some are missing: the 200-class masking is only defined for a head over ImageNet-1k.
    """
    index = {c: i for i, c in enumerate(classes)}
    missing = [w for w in subset if w not in index]
    if missing:
        raise DatasetError(
            f"{len(missing)} of the {len(subset)} {what} classes (e.g. {missing[0]}) are not among the "
            f"{len(classes)} classes of the head; {what} needs a head trained on ImageNet-1k's wnid folders"
        )
    return sorted(index[w] for w in subset)
