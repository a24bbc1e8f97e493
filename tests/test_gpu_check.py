"""`make gpu-check` (benchmarks/gpu_check.py): every path says skip without CUDA, and the same checks run on
the CPU end to end (torchrun with gloo included), one line per path."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.py"


def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_without_cuda_every_path_says_skip_and_the_check_passes(monkeypatch, capsys):
    module = gpu_check()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert module.main([]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines] == [["skip", path] for path in module.PATHS]
    assert all("no CUDA device" in line and "--device cpu" in line for line in lines)
    with pytest.raises(SystemExit):
        module.main(["--only", "grid,gird"])
    assert "unknown path(s) gird" in capsys.readouterr().err


@pytest.mark.slow
def test_every_check_runs_on_the_cpu(tmp_path):
    """The script's own logic on this machine: tiny pretraining and resume, extraction, probes, aug=paper,
    fine-tuning, and the torchrun paths in two gloo processes; every line ok (~45 s on 2 cores)."""
    done = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu"], capture_output=True, text=True,
                          timeout=600, cwd=tmp_path)
    lines = done.stdout.splitlines()
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    assert [line.split()[:2] for line in lines] == [["ok", path] for path in gpu_check().PATHS]
