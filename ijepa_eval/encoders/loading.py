"""Read checkpoint files without running code from them.

``torch.load(weights_only=True)`` refuses pickled objects other than tensors and plain containers. The
training checkpoints of MAE, DINO and iBOT store their ``argparse.Namespace`` of arguments, so that one
type (and nothing else) is allow-listed. GradScaler and optimizer states are plain dicts of numbers and
tensors and need nothing. Anything else needs ``trust_checkpoint=True`` (``--trust-checkpoint``), which
does a full unpickle.
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

from ijepa_eval.errors import CheckpointError, UnsafeCheckpointError

SAFE_GLOBALS = (argparse.Namespace,)
LEGACY_MAGIC = b"\x80\x02"  # pickle protocol 2: how torch.save wrote files before the zip format
TRUST_HINT = "pass --trust-checkpoint (trust_checkpoint=True) only if you trust where the file comes from"


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    text = lines[0] if lines else ""
    return f"{type(err).__name__}: {text[:100]}{'...' if len(text) > 100 else ''}"


def read_file(path: str | os.PathLike, *, trust_checkpoint: bool = False) -> tuple[Any, dict[str, str]]:
    """Return (object stored in the file, file-level metadata). Raises CheckpointError on any bad file."""
    from ijepa_eval.encoders.hf import is_hf_source, read_hf_folder

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
