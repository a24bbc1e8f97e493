"""CUDA logic checked on CPU: device normalisation, the free-memory rule under a faked allocator, the
features' residency decision, the kNN search torch runs on a GPU against faiss's exact search, and each
torchrun process's device and process group (faked CUDA; the real 2-process runs use gloo elsewhere)."""

import re

import numpy as np
import pytest
import torch
import torch.distributed as dist

from ijepa_eval import devices
from ijepa_eval.errors import ConfigError
from ijepa_eval.probes import knn as knn_module
from ijepa_eval.probes import linear as linear_module

GiB = 1 << 30


@pytest.fixture
def fake_cuda(monkeypatch):
    """A GPU with 80 GiB of which the driver reports 2 GiB free, while PyTorch's caching allocator holds
    30 GiB reserved and 6 GiB of it allocated: 24 GiB of the "used" memory are PyTorch's own free reserve."""
    state = {"current": 0, "free": 2 * GiB, "reserved": 30 * GiB, "allocated": 6 * GiB}
    monkeypatch.setattr(torch.cuda, "current_device", lambda: state["current"])
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (state["free"], 80 * GiB))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: state["reserved"])
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: state["allocated"])
    return state


def test_devices_are_compared_with_their_index(fake_cuda):
    assert devices.normalize("cuda") == torch.device("cuda:0")
    assert devices.same_device("cuda", torch.device("cuda", 0))  # torch: device("cuda") != device("cuda:0")
    assert torch.device("cuda") != torch.device("cuda:0")
    fake_cuda["current"] = 1  # torchrun rank 1 after torch.cuda.set_device(1)
    assert devices.normalize("cuda") == torch.device("cuda:1") and not devices.same_device("cuda", "cuda:0")
    assert devices.normalize("cpu") == torch.device("cpu")


def test_free_memory_counts_pytorchs_reserved_but_unallocated_blocks(fake_cuda):
    assert devices.free_bytes("cuda") == 2 * GiB + 24 * GiB
    assert devices.fits(13 * GiB, "cuda:0")  # half of 26 GiB; mem_get_info alone (2 GiB) would refuse it
    assert not devices.fits(14 * GiB, "cuda:0")
    fake_cuda.update(reserved=6 * GiB)  # nothing cached: only the driver's free memory
    assert devices.free_bytes("cuda") == 2 * GiB and not devices.fits(2 * GiB, "cuda")
    assert devices.free_bytes("cpu") is None and devices.fits(10**15, "cpu")


def test_features_go_to_the_device_only_when_they_fit(monkeypatch):
    """The residency decision, run on the meta device: one copy for lastPOOL and concatPOOL4 (a view of it),
    none when the rule says the GPU is too full (the caller's host tensors come back unchanged)."""
    concat = torch.randn(64, 32)
    feats = {"concatPOOL4": concat, "lastPOOL": concat[:, -8:]}
    seen = []
    monkeypatch.setattr(devices, "free_bytes", lambda device: seen.append(device) or 64 * 32 * 4 * 2)
    moved = linear_module.resident(feats, torch.device("meta"))
    assert seen and all(t.device.type == "meta" for t in moved.values())
    assert moved["lastPOOL"].shape == (64, 8) and moved["lastPOOL"]._base is moved["concatPOOL4"]._base
    monkeypatch.setattr(devices, "free_bytes", lambda device: 64 * 32 * 4 * 2 - 1)  # needs just over half
    kept = linear_module.resident(feats, torch.device("meta"))
    assert kept["concatPOOL4"] is concat and kept["lastPOOL"].device.type == "cpu"
    assert linear_module.resident(feats, torch.device("cpu"))["concatPOOL4"] is concat


def spread_features(n, dim=24, seed=0):
    """Random directions: no two training rows tie in similarity to a query, so neighbour order is unique."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=g) * torch.rand(n, 1, generator=g).add(0.5)


@pytest.mark.parametrize("k", [1, 20, 300])  # 300 = every training row
def test_knn_torch_search_equals_faiss(k):
    train, query = spread_features(300), spread_features(70, seed=1)
    want_s, want_i = knn_module._faiss_search(train, query, k)
    got_s, got_i = knn_module._torch_search(train, query, k, torch.device("cpu"))
    np.testing.assert_array_equal(got_i.numpy(), want_i.numpy())
    np.testing.assert_allclose(got_s.numpy(), want_s.numpy(), atol=1e-5)
    assert (got_s[:, :-1] >= got_s[:, 1:]).all()


def test_knn_torch_search_streams_training_rows_that_do_not_fit(monkeypatch):
    """Training rows that do not fit cross to the device in chunks, queries go in chunks: same neighbours."""
    train, query = spread_features(300), spread_features(70, seed=1)
    want_s, want_i = knn_module._faiss_search(train, query, 20)
    monkeypatch.setattr(knn_module, "fits", lambda nbytes, device: False)
    monkeypatch.setattr(knn_module, "ADD_ROWS", 64)  # 5 training blocks, the last of 44 rows
    monkeypatch.setattr(knn_module, "SIMILARITY_BYTES", 4 * 64 * 16)  # 16 queries per chunk
    blocks = list(knn_module._training_blocks(train, torch.device("cpu")))
    assert [start for start, _ in blocks] == [0, 64, 128, 192, 256]
    got_s, got_i = knn_module._torch_search(train, query, 20, torch.device("cpu"))
    np.testing.assert_array_equal(got_i.numpy(), want_i.numpy())
    np.testing.assert_allclose(got_s.numpy(), want_s.numpy(), atol=1e-5)


def test_knn_predictions_from_the_torch_search_equal_the_faiss_ones(monkeypatch):
    """Every k's top-5 classes (search, votes, ranking) with the torch search in place of faiss's; a device
    other than the host takes the torch search, with k clamped to the training set."""
    train, query = spread_features(200), spread_features(50, seed=2)
    labels = np.random.default_rng(0).integers(0, 7, 200)
    want = knn_module.knn_topk(train, labels, query, [1, 10, 200], 7)
    monkeypatch.setattr(knn_module, "_faiss_search",
                        lambda train, query, k: knn_module._torch_search(train, query, k, torch.device("cpu")))
    assert torch.equal(knn_module.knn_topk(train, labels, query, [1, 10, 200], 7), want)
    calls = []
    monkeypatch.setattr(knn_module, "_torch_search", lambda train, query, k, device: calls.append((k, device)))
    knn_module.nearest_neighbours(train, query, 500, device="meta")
    assert calls == [(200, torch.device("meta"))]


# ------------------------------------------------------------------------------------- each process's device

CUDA, CPU = torch.device("cuda"), torch.device("cpu")


@pytest.mark.parametrize(("requested", "local_rank", "local_world", "visible", "expected"), [
    (CUDA, 0, 1, 1, "cuda:0"),                        # one process
    (torch.device("cuda:3"), 0, 1, 8, "cuda:3"),      # one process, a chosen GPU
    (CUDA, 5, 8, 8, "cuda:5"),                        # torchrun --nproc_per_node 8: rank 5's own GPU
    (torch.device("cuda:5"), 5, 8, 8, "cuda:5"),      # its own GPU named explicitly (what get_features receives)
    (CPU, 5, 8, 8, "cpu"),                            # CPU ranks (gloo)
])
def test_each_process_takes_its_own_gpu(requested, local_rank, local_world, visible, expected):
    assert devices.rank_device(requested, local_rank, local_world, visible) == torch.device(expected)


@pytest.mark.parametrize(("requested", "local_rank", "local_world", "visible", "message"), [
    (torch.device("cuda:0"), 1, 2, 2, "--device cuda:0 names one GPU for the 2 processes torchrun started on this "
                                      "node; pass --device cuda"),
    (CUDA, 2, 4, 2, "torchrun started 4 processes on this node but 2 CUDA device(s) are visible; use "
                    "--nproc_per_node 2 or fewer"),
    (torch.device("cuda:2"), 0, 1, 2, "device 'cuda:2' does not exist: 2 CUDA device(s) visible"),
    (CUDA, 0, 1, 0, "CUDA is not available; pass --device cpu"),
])
def test_impossible_placements_are_refused_in_one_line(requested, local_rank, local_world, visible, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        devices.rank_device(requested, local_rank, local_world, visible)


def test_torchrun_rank_joins_nccl_bound_to_its_gpu(monkeypatch):
    """Rank 3 of 4 (2 per node, local rank 1) on a node with 2 GPUs: cuda:1 is made current before the
    process group exists, and NCCL is told that GPU (device_id) instead of guessing cuda:0."""
    calls = []
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.append(("set_device", device)))
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend, **kw: calls.append((backend, kw)))
    assert devices.process_device(None) == (3, 4, torch.device("cuda:1"))
    assert calls == [("set_device", torch.device("cuda:1")), ("nccl", {"device_id": torch.device("cuda:1")})]
    calls.clear()
    assert devices.process_device("cpu") == (3, 4, CPU)  # --device cpu under torchrun: gloo, no GPU touched
    assert calls == [("gloo", {})]


def test_one_process_joins_no_group(monkeypatch):
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(dist, "init_process_group", lambda *a, **kw: pytest.fail("no group for one process"))
    assert devices.process_device("cpu") == (0, 1, CPU)
    with pytest.raises(ConfigError, match="invalid device 'gpu0'; use cpu, cuda or cuda:N"):
        devices.process_device("gpu0")


def test_a_lent_module_goes_back_where_it_came_from(monkeypatch):
    """The encoder visits the device for extraction and returns (here: recorded moves, no GPU needed)."""
    module, moves = torch.nn.Linear(2, 2), []
    real_to = module.to
    monkeypatch.setattr(module, "to", lambda device: moves.append(torch.device(device)) or real_to("cpu"))
    with devices.lent_to(module, torch.device("cuda:1")):
        assert moves == [torch.device("cuda:1")]
    assert moves == [torch.device("cuda:1"), CPU]
    with pytest.raises(RuntimeError), devices.lent_to(module, torch.device("cuda:1")):
        raise RuntimeError("extraction failed")
    assert moves[-1] == CPU  # back even when the job fails
