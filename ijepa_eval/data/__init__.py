"""Datasets in their native on-disk formats, the paper's transforms, and tiny synthetic twins for tests.

    from ijepa_eval.data import get_dataset, eval_transform
    ds = get_dataset("clevr_count", "/data/CLEVR_v1.0", "train", transform=eval_transform("clevr_count"))
    ds.labels, ds.num_classes, ds.fingerprint()     # no image decoded

Loaders can stop at uint8 (``eval_transform(name, s, normalize=False)``, a ``decode`` backend) and let the
device normalise: ``DevicePreprocess`` and ``prefetch`` (``ijepa_eval.data.device``).
"""

from ijepa_eval.data.base import ImageDataset
from ijepa_eval.data.decode import DECODE_BACKENDS, open_rgb
from ijepa_eval.data.device import DevicePreprocess, collate_uint8, prefetch
from ijepa_eval.data.registry import DATASET_NAMES, get_dataset
from ijepa_eval.data.roots import resolve_root
from ijepa_eval.data.transforms import (
    describe_transform,
    eval_transform,
    train_transform,
    vjepa_erasing,
    vjepa_transform,
)

__all__ = [
    "DATASET_NAMES",
    "DECODE_BACKENDS",
    "DevicePreprocess",
    "ImageDataset",
    "collate_uint8",
    "describe_transform",
    "eval_transform",
    "get_dataset",
    "open_rgb",
    "prefetch",
    "resolve_root",
    "train_transform",
    "vjepa_erasing",
    "vjepa_transform",
]
