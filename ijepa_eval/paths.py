"""File names built from user-controlled text (labels, task, recipe and dataset names) stay inside their folder.

A name such as ``../../x``, ``/etc/passwd``, ``hf:/data/set``, one with NUL or a newline, or 10 kB long must
become one harmless path component: never a separator, never ``.``/``..``, never hidden, never over the
file-system's 255-byte limit. ``inside`` is the last check before a write: the joined path must resolve
under the folder the user gave.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from ijepa_eval.errors import IjepaEvalError

_UNSAFE = re.compile(r"[^A-Za-z0-9._@+=-]+")
MAX_COMPONENT = 120  # leaves room for suffixes and temp-file prefixes under the usual 255-byte limit


def safe_component(text: str, *, max_len: int = MAX_COMPONENT) -> str:
    """``text`` as a single safe path component; a shortened name keeps a hash of the whole text."""
    name = _UNSAFE.sub("_", str(text)).strip("._") or "_"
    if len(name) > max_len:
        digest = hashlib.sha256(str(text).encode("utf-8", "surrogatepass")).hexdigest()[:12]
        name = f"{name[: max_len - 13].rstrip('._')}-{digest}"
    return name


def inside(folder: str | os.PathLike, name: str) -> Path:
    """``folder / name``, refusing any result that would not lie directly inside ``folder``."""
    folder = Path(folder)
    path = folder / name
    if Path(name).name != name or name in ("", ".", "..") or path.resolve().parent != folder.resolve():
        raise IjepaEvalError(f"refusing to write '{name}' outside {folder}; this is a bug, please report it")
    return path
