"""The dataset contract every source returns: (image, label) items plus cheap metadata.

Labels and the fingerprint are available without decoding a single image, so the feature cache can
decide hit/miss (and probes can read labels) on 1.28M-image datasets in seconds.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ijepa_eval.data.decode import DEFAULT_DECODE, check_decode, open_rgb, read_for_device, read_rgb, to_uint8
from ijepa_eval.errors import ConfigError, DatasetError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class ImageDataset(Dataset):
    """Base of every source: holds labels and metadata; subclasses implement ``load``.

    ``ds[i]`` returns ``(transform(image), label)``. With ``skip_bad_images=True`` an undecodable image
    yields ``(None, label)`` instead of raising, so a collate function can drop it and record the index;
    ``ds.load(i)`` always raises a DatasetError naming the file.

    ``decode`` (``ijepa_eval.data.decode``) chooses what ``image`` is: a PIL image (``pil``), a uint8
    [3, H, W] tensor with the same pixels (``tensor``), or what the device decodes (``gpu``: a JPEG's
    encoded bytes or a decoded uint8 tensor; no transform here, it runs on the device).
    """

    def __init__(
        self,
        *,
        name: str,
        split: str,
        labels: Sequence[int] | np.ndarray,
        num_classes: int,
        transform: Callable | None = None,
        skip_bad_images: bool = False,
        classes: Sequence[str] | None = None,
        root: str | os.PathLike | None = None,
        decode: str = DEFAULT_DECODE,
    ) -> None:
        self.decode = check_decode(decode)
        if self.decode == "gpu" and transform is not None:
            raise ConfigError("decode 'gpu' decodes and resizes on the device: build the dataset without a "
                              "transform and give it to ijepa_eval.data.device.DevicePreprocess")
        self.name = name
        self.split = split
        self.labels = np.asarray(labels, dtype=np.int64)
        self.num_classes = int(num_classes)
        self.transform = transform
        self.skip_bad_images = bool(skip_bad_images)
        self.classes = list(classes) if classes is not None else None
        self.root = Path(root) if root is not None else None
        self._check_labels()

    def _check_labels(self) -> None:
        if len(self.labels) == 0:
            raise DatasetError(
                f"dataset '{self.name}' split '{self.split}' is empty under {self.root}; check the root and split"
            )
        lo, hi = int(self.labels.min()), int(self.labels.max())
        if lo < 0 or hi >= self.num_classes:
            raise DatasetError(
                f"dataset '{self.name}' split '{self.split}' has labels in [{lo}, {hi}] outside "
                f"[0, {self.num_classes - 1}]; the label files under {self.root} are inconsistent"
            )

    def __len__(self) -> int:
        return len(self.labels)

    def load(self, index: int) -> Image.Image:
        """The RGB PIL image at ``index``; raises DatasetError naming the file when it cannot be decoded."""
        raise NotImplementedError

    def load_uint8(self, index: int) -> torch.Tensor:
        """The pixels of ``load(index)`` as uint8 [3, H, W] (sources with a faster way override it)."""
        return to_uint8(self.load(index))

    def load_for_device(self, index: int) -> torch.Tensor:
        """The ``gpu`` backend's item: encoded JPEG bytes where the source has them, else ``load_uint8``."""
        return self.load_uint8(index)

    def read(self, index: int, decode: str | None = None) -> Image.Image | torch.Tensor:
        """The image at ``index`` as decode backend ``decode`` (None = this dataset's) delivers it."""
        decode = self.decode if decode is None else check_decode(decode)
        if decode == "tensor":
            return self.load_uint8(index)
        return self.load_for_device(index) if decode == "gpu" else self.load(index)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        label = int(self.labels[index])
        try:
            img = self.read(index)
        except DatasetError:
            if self.skip_bad_images:
                return None, label
            raise
        if self.transform is not None:
            img = self.transform(img)
        return img, label

    def _fingerprint_parts(self) -> Iterable[str]:
        """Strings that identify the content: file list + sizes, label source hashes."""
        raise NotImplementedError

    def fingerprint(self) -> str:
        """sha256 over name, split, classes, labels and the content parts; stat-only, never reads images."""
        h = hashlib.sha256()
        for part in (self.name, self.split, str(self.num_classes)):
            h.update(part.encode() + b"\0")
        h.update(self.labels.tobytes())
        for part in self._fingerprint_parts():
            h.update(part.encode() + b"\0")
        return h.hexdigest()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, split={self.split!r}, n={len(self)}, "
            f"num_classes={self.num_classes}, root={str(self.root)!r})"
        )


class FileImageDataset(ImageDataset):
    """Images stored one per file under ``root``; ``files`` are paths relative to ``root``."""

    def __init__(self, *, root: str | os.PathLike, files: Sequence[str], label_source: str = "", **kwargs) -> None:
        if len(files) != len(kwargs.get("labels", ())):
            raise ValueError("files and labels differ in length")
        super().__init__(root=root, **kwargs)
        self.files = list(files)
        self.label_source = label_source

    def path(self, index: int) -> Path:
        return self.root / self.files[index]

    def load(self, index: int) -> Image.Image:
        return open_rgb(self.path(index))

    def load_uint8(self, index: int) -> torch.Tensor:
        return read_rgb(self.path(index))

    def load_for_device(self, index: int) -> torch.Tensor:
        return read_for_device(self.path(index))

    def _fingerprint_parts(self) -> Iterable[str]:
        yield self.label_source
        for rel in self.files:
            try:
                size = os.stat(self.root / rel).st_size
            except FileNotFoundError:
                size = -1
            yield f"{rel}:{size}"
