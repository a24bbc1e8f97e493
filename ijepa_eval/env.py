"""The software and hardware a number was produced on, recorded in every result and benchmark."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any


def git_hash() -> str | None:
    """Commit of the ijepa-eval checkout, with '-dirty' when it has uncommitted changes; None outside git."""
    repo = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True, timeout=5
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo, capture_output=True, text=True, check=True, timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("-dirty" if dirty else "")


def environment() -> dict[str, Any]:
    import timm
    import torch

    cuda = torch.cuda.is_available()
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "cuda": torch.version.cuda if cuda else None,
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "gpu_count": torch.cuda.device_count() if cuda else 0,
        "cpu_count": os.cpu_count(),
        "git": git_hash(),
    }


def compute_cost(wall_s: float, device: Any, count: int = 1) -> dict[str, Any]:
    """What a run occupied: device kind, its name, how many, and GPU-hours = wall-clock × GPUs (None on CPU).

    A CPU run has no GPU-hours: reporting its wall-clock as such would make CPU and GPU costs look alike.
    """
    import torch

    device = torch.device(device)
    gpu = device.type != "cpu"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {"device": device.type, "device_name": name, "device_count": int(count),
            "gpu_hours": round(wall_s * count / 3600, 6) if gpu else None}
