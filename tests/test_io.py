import contextlib
import errno
import json
import os
import resource
import signal
import stat

import pytest
import torch

from ijepa_eval.errors import describe_os_error
from ijepa_eval.io import atomic_open, atomic_torch_save, atomic_write_json, sha256_file


def test_atomic_write_replaces_whole_file_with_normal_mode(tmp_path):
    path = tmp_path / "sub" / "r.json"
    atomic_write_json(path, {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1}
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask


def test_failed_write_leaves_old_file_and_no_temp(tmp_path):
    path = tmp_path / "r.json"
    atomic_write_json(path, {"old": True})
    with pytest.raises(RuntimeError), atomic_open(path, "w") as f:
        f.write("{half")
        raise RuntimeError("killed mid-write")
    assert json.loads(path.read_text()) == {"old": True}
    assert os.listdir(tmp_path) == ["r.json"]


def test_sha256_matches_hashlib(tmp_path):
    import hashlib

    path = tmp_path / "blob"
    data = os.urandom(5 << 20)
    path.write_bytes(data)
    assert sha256_file(path, chunk_size=1 << 20) == hashlib.sha256(data).hexdigest()


@contextlib.contextmanager
def file_size_limit(nbytes: int):
    """The kernel's RLIMIT_FSIZE: a write past ``nbytes`` is cut short, then fails (EFBIG), the way a write
    onto a filling disk does (ENOSPC); SIGXFSZ ignored so the process survives to see the error."""
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    old = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, old[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old)
        signal.signal(signal.SIGXFSZ, handler)


@pytest.mark.parametrize("room", [1000, 100_000, 3_000_000])  # header, first record, mid-tensor
def test_torch_save_on_a_full_disk_is_one_oserror_and_leaves_the_old_file(tmp_path, room):
    """torch's zip writer turns a failed write of a file object into RuntimeError('... unexpected pos ...'):
    atomic_torch_save raises the OSError naming the file, keeps the previous one and removes its temp file."""
    path = tmp_path / "latest.pth"
    atomic_torch_save({"w": torch.zeros(3)}, path)
    with file_size_limit(room), pytest.raises(OSError) as caught:
        atomic_torch_save({"w": torch.randn(1_000_000), "meta": list(range(100))}, path)
    assert caught.value.errno == errno.EFBIG and caught.value.filename == str(path)
    assert describe_os_error(caught.value).startswith(f"File too large ({path}); the file system")
    assert os.listdir(tmp_path) == ["latest.pth"] and torch.equal(torch.load(path)["w"], torch.zeros(3))
