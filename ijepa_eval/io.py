"""Atomic file writes and content hashes, shared by the cache, results and checkpoints.

A reader must never see a half-written file: write to a temp file in the same folder, fsync, rename.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temp file next to ``path``; on clean exit it replaces ``path``, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the mode open() would
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


class _WriteFailures:
    """A file's ``write``/``flush`` that remember the OSError they raised: torch's zip writer swallows it and
    raises its own ``RuntimeError`` ("unexpected pos ...") instead."""

    def __init__(self, f: IO) -> None:
        self.f, self.error = f, None

    def write(self, data) -> int:
        try:
            return self.f.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self) -> None:
        try:
            self.f.flush()
        except OSError as err:
            self.error = err
            raise


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` through :func:`atomic_open`. A failed write (disk full, quota) raises the OSError it is,
    naming ``path`` (the CLI prints it as one line), and leaves neither ``path`` nor a temp file behind."""
    import torch

    with atomic_open(path, "wb") as f:
        recorder = _WriteFailures(f)
        try:
            torch.save(obj, recorder)
        except (RuntimeError, OSError):
            if recorder.error is None:
                raise
            raise OSError(recorder.error.errno, recorder.error.strerror, str(path)) from recorder.error


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 22) -> str:
    """Content hash of a file (hex). Identifies a checkpoint independent of its name or location."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            h.update(chunk)
    return h.hexdigest()
