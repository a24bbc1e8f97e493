"""Any image-classification dataset readable by HF ``datasets``: ``hf:<hub id or local path>``.

Local paths (a parquet/arrow folder in hub layout, a single .parquet file, or a ``save_to_disk`` folder)
never touch the network. Hub ids go through the hub unless HF_DATASETS_OFFLINE / HF_HUB_OFFLINE are set,
in which case only the local HF cache is used (the library's own switch).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from ijepa_eval.data.base import ImageDataset
from ijepa_eval.errors import DatasetError

# Our split names -> the names HF datasets commonly use, in preference order.
SPLIT_ALIASES = {"train": ("train",), "val": ("validation", "val", "valid"), "test": ("test",)}


def _load_all_splits(source: str, cache_dir: str | None):
    import datasets

    path = Path(source).expanduser()
    if path.is_file() and path.suffix == ".parquet":
        return datasets.load_dataset("parquet", data_files={"train": str(path)}, cache_dir=cache_dir)
    if path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file()):
        loaded = datasets.load_from_disk(str(path))
        return loaded if isinstance(loaded, datasets.DatasetDict) else datasets.DatasetDict(train=loaded)
    if not path.exists() and (source.startswith((".", "/", "~")) or source.count("/") > 1):
        raise DatasetError(f"HF dataset path {path} does not exist; give a hub id (owner/name) or a local folder")
    return datasets.load_dataset(str(path) if path.exists() else source, cache_dir=cache_dir)


def _pick_split(splits, source: str, split: str):
    for candidate in SPLIT_ALIASES.get(split, (split,)):
        if candidate in splits:
            return candidate
    raise DatasetError(f"HF dataset '{source}' has no split '{split}' (it has: {', '.join(splits)})")


class HFImageDataset(ImageDataset):
    def __init__(
        self,
        source: str,
        split: str,
        *,
        image_column: str = "image",
        label_column: str = "label",
        num_classes: int | None = None,
        cache_dir: str | None = None,
        **kwargs,
    ) -> None:
        import datasets

        try:
            splits = _load_all_splits(source, cache_dir)
        except (FileNotFoundError, ConnectionError, datasets.exceptions.DatasetNotFoundError) as err:
            raise DatasetError(
                f"cannot load HF dataset '{source}' ({type(err).__name__}: {str(err).splitlines()[0]}); "
                "check the id/path, or unset HF_DATASETS_OFFLINE to download"
            ) from None
        hf_split = _pick_split(list(splits), source, split)
        table = splits[hf_split]
        for col in (image_column, label_column):
            if col not in table.column_names:
                raise DatasetError(
                    f"HF dataset '{source}' has no column '{col}' (columns: {', '.join(table.column_names)}); "
                    "pass image_column=/label_column="
                )
        self.table = table
        self.image_column = image_column
        self.source = source
        labels = np.asarray(table.select_columns([label_column])[label_column], dtype=np.int64)
        feature = table.features[label_column]
        classes = getattr(feature, "names", None)
        if num_classes is None:
            # Without a ClassLabel feature the label space is only known from the data itself.
            num_classes = len(classes) if classes else int(labels.max()) + 1 if len(labels) else 0
        super().__init__(
            name=f"hf:{source}", split=split, labels=labels, num_classes=num_classes, classes=classes,
            root=source if Path(source).exists() else None, **kwargs,
        )

    def load(self, index: int) -> Image.Image:
        value = self.table[int(index)][self.image_column]
        if not isinstance(value, Image.Image):
            raise DatasetError(
                f"HF dataset '{self.source}' column '{self.image_column}' holds {type(value).__name__}, not images"
            )
        try:
            return value.convert("RGB")
        except OSError as err:
            raise DatasetError(f"image {index} of HF dataset '{self.source}' is corrupt ({err})") from None

    def _fingerprint_parts(self) -> Iterable[str]:
        yield self.table._fingerprint
        yield self.image_column
        path = Path(self.source).expanduser()
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else []
        for p in files:
            yield f"{p.relative_to(path) if p != path else p.name}:{os.path.getsize(p)}"


def hf(source: str, split: str, **kwargs) -> HFImageDataset:
    return HFImageDataset(source, split, **kwargs)
