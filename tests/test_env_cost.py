"""Honest cost figures: GPU-hours are wall-clock × GPUs used, and there are none on a CPU."""

import pytest
import torch

from ijepa_eval.env import compute_cost


def test_gpu_hours_count_every_gpu_and_none_on_cpu(monkeypatch):
    assert compute_cost(7200.0, "cpu", 1) == {"device": "cpu", "device_name": None, "device_count": 1, "gpu_hours": None}
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: "NVIDIA H100 80GB HBM3")
    cost = compute_cost(5400.0, torch.device("cuda", 0), 8)  # 1.5 h on 8 GPUs (torchrun ranks)
    assert cost == {"device": "cuda", "device_name": "NVIDIA H100 80GB HBM3", "device_count": 8, "gpu_hours": 12.0}
    assert compute_cost(1800.0, "mps")["gpu_hours"] == pytest.approx(0.5)
