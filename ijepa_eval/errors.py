"""One exception family for every failure a user can fix.

The CLI prints ``str(err)`` as a single line and exits non-zero; ``--debug`` shows the traceback.
Messages say what was wrong *and* what to do about it.
"""

from __future__ import annotations

import difflib
import errno
import os
from collections.abc import Iterable


class IjepaEvalError(Exception):
    """Base class: a one-line, user-facing error."""

    exit_code = 2


class CheckpointError(IjepaEvalError):
    """A checkpoint cannot be read, recognised or loaded."""


class UnsafeCheckpointError(CheckpointError):
    """Loading would unpickle arbitrary objects; needs --trust-checkpoint."""


class ArchitectureError(CheckpointError):
    """The architecture cannot be inferred or does not match the weights."""


class DatasetError(IjepaEvalError):
    """A dataset root, split or file is missing or malformed."""


class CacheError(IjepaEvalError):
    """The feature cache is unusable."""


class ConfigError(IjepaEvalError):
    """A protocol, pretraining config or key=value override is invalid."""


class RegressionError(IjepaEvalError):
    """`ijepa-eval check` found a metric outside its tolerance."""

    exit_code = 1


def unknown_choice(kind: str, name: str, available: Iterable[str]) -> str:
    """Message for a failed lookup: names the unknown thing, suggests the closest, lists what exists."""
    available = sorted(available)
    close = difflib.get_close_matches(name, available, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return f"unknown {kind} '{name}'.{hint} Available: {', '.join(available)}"


_OS_HINTS = {
    errno.ENOSPC: "free some space or point the output elsewhere, then run again (finished work is kept)",
    errno.EROFS: "the folder is read-only; choose a writable --out / --cache-dir",
    errno.EACCES: "no permission; choose a folder you can write to",
    errno.EPERM: "no permission; choose a folder you can write to",
    errno.EDQUOT: "disk quota exceeded; free some space, then run again",
    errno.EFBIG: "the file system (or `ulimit -f`) allows no file this large; write elsewhere or raise the limit",
}


def describe_os_error(err: OSError) -> str:
    """One line for an environment fault (disk full, read-only folder, ...): what, where, what to do."""
    reason = os.strerror(err.errno) if err.errno else str(err)
    where = f" ({err.filename})" if err.filename else ""
    hint = _OS_HINTS.get(err.errno, "check the path and the disk")
    return f"{reason}{where}; {hint}".replace("\n", " ")
