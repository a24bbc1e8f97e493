"""A probe protocol under torchrun (2 processes, gloo on CPU): each process on its own device, extraction
shared, one result — the single process's — written and printed once; aug=paper refused in one line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_features_dist import free_port

from ijepa_eval.data.synthetic import write_cifar100
from ijepa_eval.errors import ConfigError
from ijepa_eval.protocols import run_protocol
from ijepa_eval.protocols import runner as runner_module
from ijepa_eval.results import load_result

sys.path.insert(0, str(Path(__file__).parent))
from fixtures_checkpoints import write_ijepa_checkpoint  # noqa: E402

FAST = {"epochs": 2, "batch_size": 16, "grid.lr_mults": [1.0], "grid.wds": [0.0]}


def test_two_processes_write_the_single_process_result_once(tmp_path):
    ckpt, root = tmp_path / "tiny.pth.tar", write_cifar100(tmp_path / "cifar", n_train=48, n_test=16)
    write_ijepa_checkpoint(ckpt, depth=4, img_size=32)
    single = load_result(run_protocol("cifar100", ckpt, root=root, out_dir=tmp_path / "one", cache_dir=tmp_path / "c1",
                                      device="cpu", num_workers=0, progress=False, overrides=FAST))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), "-m", "ijepa_eval.cli", "transfer", "--dataset", "cifar100",
           "--ckpt", str(ckpt), "--root", str(root), "--out", str(tmp_path / "two"), "--cache-dir", str(tmp_path / "c2"),
           "--device", "cpu", "--workers", "0", "--quiet", *(f"{k}={json.dumps(v)}" for k, v in FAST.items())]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("result: ") == 1, done.stdout  # rank 0 prints; rank 1 returns quietly
    (path,) = (tmp_path / "two").glob("*.json")
    two = load_result(path)
    assert two.metrics == single.metrics and two.selection == single.selection
    assert [h["scores"] for h in two.heads] == [h["scores"] for h in single.heads]
    assert two.timings["device_count"] == 2  # both processes' time counts


def test_aug_paper_under_torchrun_is_refused_in_one_line(tmp_path, monkeypatch):
    """Each rank would re-encode every training image on its own: refused before the checkpoint is read."""
    monkeypatch.setattr(runner_module, "process_device", lambda device: (1, 2, torch.device("cpu")))
    with pytest.raises(ConfigError, match=r"aug=paper .* among 2 torchrun processes; run it without torchrun"):
        run_protocol("cifar100", tmp_path / "not-read.pth", root=tmp_path, overrides={"aug": "paper"})
