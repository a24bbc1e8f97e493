"""Two processes under torchrun (gloo, CPU) extract strided shards and agree with a single process."""

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import torch
from test_features import FAST, tiny_encoder

from ijepa_eval.data import get_dataset
from ijepa_eval.data.synthetic import write_cifar100
from ijepa_eval.features import get_features

RANK_SCRIPT = """
import json, sys
import numpy as np, torch.distributed as dist
sys.path.insert(0, {tests!r})
from test_features import FAST, CountingForward, tiny_encoder
from ijepa_eval.data import get_dataset
from ijepa_eval.features import get_features

enc = tiny_encoder()
counter = CountingForward(enc)
fs = get_features(enc, get_dataset("cifar100", {root!r}, "test"), cache_dir={cache!r}, **FAST)
rank = dist.get_rank()  # get_features set up the process group from torchrun's environment
np.save({out!r} + f"/rank{{rank}}.npy", fs.representation("concatPOOL4").numpy())
json.dump({{"calls": counter.calls, "world": dist.get_world_size()}}, open({out!r} + f"/rank{{rank}}.json", "w"))
dist.destroy_process_group()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_processes_equal_one_process(tmp_path):
    root = write_cifar100(tmp_path / "cifar", n_train=0, n_test=40)
    single = get_features(tiny_encoder(), get_dataset("cifar100", root, "test"), cache_dir=tmp_path / "one", **FAST)
    script = tmp_path / "rank.py"
    tests_dir = str(Path(__file__).parent)
    script.write_text(textwrap.dedent(RANK_SCRIPT.format(tests=tests_dir, root=str(root), cache=str(tmp_path / "two"),
                                                         out=str(tmp_path))))
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
         "--master_port", str(free_port()), str(script)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # shards of 16 rows, batches of 8: rank 0 owns shards 0 and 2 (16 + 8 rows), rank 1 shard 1 (16 rows)
    calls = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [c["calls"] for c in calls] == [3, 2] and {c["world"] for c in calls} == {2}
    expected = single.representation("concatPOOL4").numpy()
    for rank in (0, 1):
        np.testing.assert_allclose(np.load(tmp_path / f"rank{rank}.npy"), expected, atol=1e-3, rtol=0)
    # the merged cache is complete and serves a later single-process call without any forward pass
    enc = tiny_encoder()
    enc.forward_pooled = None  # a call would raise TypeError
    merged = get_features(enc, get_dataset("cifar100", root, "test"), cache_dir=tmp_path / "two", **FAST)
    assert merged.meta["cache_hit"]
    torch.testing.assert_close(merged.representation("concatPOOL4"), torch.from_numpy(expected), atol=1e-3, rtol=0)
