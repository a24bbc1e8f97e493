"""Shared test set-up: small, deterministic, CPU-only."""

import os

import pytest

# Two cores, two xdist workers: one BLAS thread each keeps runs predictable.
os.environ.setdefault("OMP_NUM_THREADS", "1")

SHARED_DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")


@pytest.fixture(autouse=True)
def _seed_and_threads():
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(1)
    yield


@pytest.fixture
def imagenet_subsets_dir() -> str:
    """The real SimCLR split files, read in place (never copied into the repo)."""
    path = os.path.abspath(os.path.join(SHARED_DATA, "imagenet_subsets"))
    if not os.path.isdir(path):
        pytest.skip(f"shared split files not found at {path}")
    return path
