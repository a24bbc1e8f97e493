"""CIFAR-100, python version: ``cifar-100-python/{train,test,meta}`` pickles as distributed.

The pickles were written by Python 2 (str keys; loaded with encoding='latin1' as torchvision does).
A restricted unpickler admits only what those files contain (dicts, lists, numpy arrays), so a tampered
file cannot execute code.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ijepa_eval.data.base import ImageDataset
from ijepa_eval.errors import DatasetError

FOLDER = "cifar-100-python"
SPLITS = ("train", "test")
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR pickle")
        return super().find_class(module, name)


def load_pickle(path: Path) -> dict[str, object]:
    """A CIFAR pickle as a dict with str keys (bytes keys from encoding='bytes' writers are decoded)."""
    try:
        with open(path, "rb") as f:
            obj = _ArrayUnpickler(f, encoding="latin1").load()
    except FileNotFoundError:
        raise DatasetError(f"CIFAR-100 file {path} is missing; extract cifar-100-python.tar.gz under the root") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as err:
        raise DatasetError(f"CIFAR-100 file {path} is not a valid CIFAR pickle ({err}); re-download it") from None
    if not isinstance(obj, dict):
        raise DatasetError(f"CIFAR-100 file {path} does not hold a dict; re-download it")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def find_folder(root: Path) -> Path:
    """Accept the folder holding ``cifar-100-python/`` or that folder itself."""
    for path in (root / FOLDER, root):
        if (path / "meta").is_file():
            return path
    raise DatasetError(f"no CIFAR-100 python files under {root}; expected {root / FOLDER}/{{train,test,meta}}")


class Cifar100(ImageDataset):
    """All images are held in memory (50k × 32×32×3 = 150 MB) as the pickle stores them."""

    def __init__(self, root: Path, split: str, **kwargs) -> None:
        folder = find_folder(root)
        self.source = folder / split
        batch = load_pickle(self.source)
        meta = load_pickle(folder / "meta")
        try:
            data = np.asarray(batch["data"], dtype=np.uint8)
            labels = batch["fine_labels"]
            classes = list(meta["fine_label_names"])
        except KeyError as err:
            raise DatasetError(f"CIFAR-100 file {self.source} lacks key {err}; is this CIFAR-10?") from None
        except (TypeError, ValueError) as err:
            raise DatasetError(f"CIFAR-100 file {self.source} or its meta holds malformed fields ({err}); "
                               "re-download it") from None
        if not isinstance(labels, list | np.ndarray) or not all(
                isinstance(v, int | np.integer) and not isinstance(v, bool) for v in labels):
            raise DatasetError(f"CIFAR-100 file {self.source}: 'fine_labels' is not a list of integers; re-download it")
        if data.ndim != 2 or data.shape[1] != 3072:
            raise DatasetError(f"CIFAR-100 file {self.source} has data of shape {data.shape}; expected N x 3072")
        if len(data) != len(labels):
            raise DatasetError(f"CIFAR-100 file {self.source} has {len(data)} images but {len(labels)} labels; "
                               "re-download it")
        # Rows are three 32x32 planes (R, G, B): CHW -> HWC for PIL.
        self.images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        super().__init__(
            name="cifar100", split=split, labels=labels, num_classes=len(classes), classes=classes,
            root=root, **kwargs,
        )

    def load(self, index: int) -> Image.Image:
        return Image.fromarray(self.images[index])

    def load_uint8(self, index: int) -> torch.Tensor:
        return torch.from_numpy(self.images[index]).permute(2, 0, 1)  # the array PIL would wrap, no copy

    def _fingerprint_parts(self) -> Iterable[str]:
        # Pixels live in the pickle: hashing it (~150 MB, < 1 s) is the cheapest faithful identity.
        yield f"{self.source.name}:{os.path.getsize(self.source)}"
        yield hashlib.sha256(np.ascontiguousarray(self.images).tobytes()).hexdigest()


def cifar100(root: Path, split: str, **kwargs) -> Cifar100:
    return Cifar100(root, split, **kwargs)
