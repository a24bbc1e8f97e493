"""Stage 1 of loading: read a source without running code from it.

A source is a checkpoint file (``.pth``/``.pth.tar``/``.pt``/``.safetensors``), a folder written by
``save_pretrained`` (``config.json`` + weights), or ``hf-hub:<org>/<name>[@revision]``, looked up in the
local HF cache only (never downloaded here). What comes back is what the file holds (a mapping of tensors
and plain values) or an ``HFFolder`` (config + tensors), plus file-level metadata; the format stage reads it.

``torch.load(weights_only=True)`` refuses pickled objects other than tensors and plain containers. The
training checkpoints of MAE, DINO and iBOT store their ``argparse.Namespace`` of arguments, so that one
type (and nothing else) is allow-listed. GradScaler and optimizer states are plain dicts of numbers and
tensors and need nothing. Anything else needs ``trust_checkpoint=True`` (``--trust-checkpoint``), which
does a full unpickle.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ijepa_eval.errors import CheckpointError, UnsafeCheckpointError
from ijepa_eval.io import sha256_file

if TYPE_CHECKING:
    import torch

SAFE_GLOBALS = (argparse.Namespace,)
LEGACY_MAGIC = b"\x80\x02"  # pickle protocol 2: how torch.save wrote files before the zip format
TRUST_HINT = "pass --trust-checkpoint (trust_checkpoint=True) only if you trust where the file comes from"
HUB_PREFIX = "hf-hub:"
CONFIG = "config.json"
# Single-file and sharded weights, in the order transformers prefers them.
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


@dataclass
class HFFolder:
    """What ``save_pretrained`` (transformers, or timm's ``save_for_hf``) wrote: the parsed config.json
    and every tensor of the model."""

    path: Path
    config: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    files: list[Path]


def is_hf_source(source: str | os.PathLike) -> bool:
    text = str(source)
    return text.startswith(HUB_PREFIX) or (Path(text).is_dir() and (Path(text) / CONFIG).is_file())


def is_checkpoint_source(source: str) -> bool:
    """A file or transformers folder on disk, or an hf-hub id; anything else is a timm model name."""
    return Path(source).exists() or is_hf_source(source)


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    text = lines[0] if lines else ""
    return f"{type(err).__name__}: {text[:100]}{'...' if len(text) > 100 else ''}"


def read_file(path: str | os.PathLike, *, trust_checkpoint: bool = False) -> tuple[Any, dict[str, str]]:
    """Return (object stored in the file, file-level metadata). Raises CheckpointError on any bad file."""
    if is_hf_source(path) or Path(path).is_dir():  # a save_pretrained folder, or hf-hub:<org>/<name> (HF cache)
        return read_hf_folder(path)
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' does not exist or is not a file; check the path")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint '{path}' is empty; re-download or re-save it")
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    return _read_torch(path, trust_checkpoint), {}


def content_sha256(path: str | os.PathLike, obj: Any) -> str:
    """A source's content identity for caches and results: the file's hash, or one hash over a folder's
    config.json and weight files."""
    if not isinstance(obj, HFFolder):
        return sha256_file(path)
    h = hashlib.sha256()
    for file in [obj.path / CONFIG, *obj.files]:
        h.update(f"{file.name}:{sha256_file(file)};".encode())
    return h.hexdigest()


def _read_safetensors(path: Path) -> tuple[dict, dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
            metadata = dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(
            f"cannot read '{path}' as safetensors ({_first_line(err)}); the file is truncated or not safetensors"
        ) from err
    return tensors, metadata


def _read_torch(path: Path, trust_checkpoint: bool) -> Any:
    import torch

    # mmap keeps multi-GB optimizer states on disk; only the zip format (torch >= 1.6) supports it.
    mmap = zipfile.is_zipfile(path)
    if not mmap:
        with open(path, "rb") as f:
            if f.read(2) != LEGACY_MAGIC:
                raise CheckpointError(
                    f"'{path}' is not a PyTorch checkpoint (neither zip nor legacy torch.save format) "
                    "or is truncated; check the path or re-download it"
                )
    if mmap:
        check_storage_records(path)
    try:
        if trust_checkpoint:
            return torch.load(path, map_location="cpu", weights_only=False, mmap=mmap)
        with torch.serialization.safe_globals(list(SAFE_GLOBALS)):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        unsafe = re.search(r"GLOBAL (\S+)", str(err))
        if unsafe and not trust_checkpoint:
            raise UnsafeCheckpointError(
                f"'{path}' contains a pickled object ({unsafe.group(1)}) that could run code when loaded; "
                f"refused. {TRUST_HINT}"
            ) from err
        raise CheckpointError(f"cannot unpickle '{path}' ({_first_line(err)}); re-download or re-save it") from err
    except (RuntimeError, EOFError, KeyError, IndexError, TypeError, ValueError, OSError, zipfile.BadZipFile) as err:
        raise CheckpointError(
            f"cannot read '{path}' as a PyTorch checkpoint ({_first_line(err)}); "
            "the file is truncated or not a checkpoint: re-download or re-save it"
        ) from err
    except (ImportError, AttributeError) as err:  # trusted full unpickle of a class that is not installed
        raise CheckpointError(
            f"'{path}' needs code that is not importable here ({_first_line(err)}); "
            "install the package that wrote it or re-save its state_dict"
        ) from err


class _Stub(dict):
    """Whatever a checkpoint's pickle names (a class, a rebuild function): built from nothing, runs nothing."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__()

    def __setstate__(self, state: Any) -> None:
        pass

    def append(self, item: Any) -> None:
        pass

    def extend(self, items: Any) -> None:
        pass


class _StorageRecords(pickle.Unpickler):
    """Reads a zip checkpoint's ``data.pkl`` for its storages only: (record key, storage type, elements) of
    every persistent id. Nothing is imported: every global is ``_Stub`` except the storage type's name."""

    def __init__(self, data: bytes) -> None:
        super().__init__(io.BytesIO(data))
        self.storages: list[tuple[str, str, int]] = []

    def find_class(self, module: str, name: str) -> Any:
        return name if module == "torch" and name.endswith("Storage") else _Stub

    def persistent_load(self, pid: Any) -> None:
        if isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage":
            self.storages.append((str(pid[2]), pid[1], int(pid[4])))


def check_storage_records(path: Path) -> None:
    """Every storage's zip record holds all of its bytes. ``torch.load(mmap=True)`` maps storages straight
    from the file and does not check: a record cut short (a damaged copy) would hand the tensor the bytes
    of the records after it, and every reader (``inspect`` too) would go on with wrong numbers."""
    import torch

    try:
        with zipfile.ZipFile(path) as zf:
            sizes = {info.filename: info.file_size for info in zf.infolist()}
            pkl = next((n for n in sizes if n.rsplit("/", 1)[-1] == "data.pkl"), None)
            if pkl is None:
                return  # not torch's layout: torch.load reports it
            unpickler = _StorageRecords(zf.read(pkl))
            unpickler.load()
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, OSError, ValueError, TypeError, KeyError,
            IndexError, AttributeError):
        return  # a pickle this reader cannot follow: torch.load's own checks decide
    prefix = pkl[: -len("data.pkl")]
    for key, storage_type, numel in unpickler.storages:
        try:
            need = numel * torch.serialization.StorageType(storage_type).dtype.itemsize
        except (KeyError, AttributeError, TypeError):
            continue  # an unknown storage type: torch.load refuses it
        have = sizes.get(f"{prefix}data/{key}")
        if have is not None and have < need:
            raise CheckpointError(f"'{path}': storage record data/{key} holds {have} bytes but its tensor needs "
                                  f"{need}; the file is damaged: re-download or re-save it")


# -- transformers / timm hub folders -------------------------------------------------------------------
def resolve_hub_id(source: str) -> Path:
    """The local folder of a ``save_pretrained`` folder or of a cached ``hf-hub:`` id (offline)."""
    if not source.startswith(HUB_PREFIX):
        return Path(source)
    repo_id, _, revision = source[len(HUB_PREFIX):].partition("@")
    if repo_id.count("/") != 1:
        raise CheckpointError(f"'{source}' is not a hub id; write hf-hub:<org>/<name>, e.g. hf-hub:facebook/ijepa_vith14_1k")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    cache_dir = os.environ.get("HF_HUB_CACHE") or None  # read now: huggingface_hub reads it at import
    try:
        return Path(snapshot_download(repo_id, revision=revision or None, cache_dir=cache_dir, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, ValueError) as err:
        raise CheckpointError(
            f"'{source}' is not in the local HF cache ({type(err).__name__}); download it first: "
            f"hf download {repo_id}{f' --revision {revision}' if revision else ''} (then it loads offline)"
        ) from err


def _read_weights(folder: Path) -> tuple[dict[str, torch.Tensor], list[Path]]:
    name = next((n for n in WEIGHT_FILES if (folder / n).is_file()), None)
    if name is None:
        raise CheckpointError(f"'{folder}' has config.json but none of {', '.join(WEIGHT_FILES)}; "
                              "download them too (hf download) or save the model with save_pretrained")
    if name.endswith(".index.json"):
        try:
            weight_map = json.loads((folder / name).read_text())["weight_map"]
            files = [folder / f for f in sorted(set(weight_map.values()))]
        except (OSError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
            raise CheckpointError(f"cannot read the shard index '{folder / name}' ({type(err).__name__}); "
                                  "re-download or re-save the model") from err
    else:
        files = [folder / name]
    state_dict: dict[str, torch.Tensor] = {}
    for path in files:
        obj, _ = read_file(path)  # safe: weights_only for .bin, safetensors otherwise
        state_dict.update(obj)
    return state_dict, files


def read_hf_folder(source: str | os.PathLike) -> tuple[HFFolder, dict[str, str]]:
    """A save_pretrained folder or cached hub id, read safely (safetensors, or torch.load with weights_only)."""
    folder = resolve_hub_id(str(source))
    if not (folder / CONFIG).is_file():
        raise CheckpointError(f"'{folder}' is a folder without config.json; point --ckpt at a checkpoint file "
                              "or a transformers save_pretrained folder")
    try:
        config = json.loads((folder / CONFIG).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"cannot read '{folder / CONFIG}' ({type(err).__name__}); re-download or re-save it") from err
    if not isinstance(config, dict):
        raise CheckpointError(f"'{folder / CONFIG}' holds a JSON {type(config).__name__}, not an object; "
                              "re-download or re-save it")
    state_dict, files = _read_weights(folder)
    return HFFolder(folder, config, state_dict, files), {}
