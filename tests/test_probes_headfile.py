"""Saved heads: safetensors round trip, bit-exact logits, refusal of changed, foreign or malformed files."""

import hashlib

import pytest
import torch
from safetensors.torch import save_file

from ijepa_eval.errors import CheckpointError
from ijepa_eval.probes.headfile import (
    SavedHead,
    head_from_grid,
    head_from_logreg,
    load_head,
    save_head,
)
from ijepa_eval.probes.linear import LinearTrainConfig, fit_linear_grid, head_grid
from ijepa_eval.probes.logreg import fit_logreg

CLASSES = ["n01", "n02", "n03", "n04", "n05"]


@pytest.fixture(scope="module")
def trained():
    g = torch.Generator().manual_seed(0)
    feats = {"lastPOOL": torch.randn(120, 8, generator=g), "concatPOOL4": torch.randn(120, 32, generator=g)}
    labels = torch.randint(0, 5, (120,), generator=g)
    specs = head_grid(["lastPOOL", "concatPOOL4"], ["bn_linear", "linear"], [1.0, 0.1], [5e-4, 0.0])
    grid, _ = fit_linear_grid(feats, labels, specs, LinearTrainConfig(epochs=2, batch_size=32), 5, progress=False)
    return grid, feats, labels


def test_every_grid_head_round_trips_to_bit_identical_logits(trained, tmp_path):
    grid, feats, _ = trained
    every = grid.logits(feats)  # [H, N, C] as the probe scores them
    for i, spec in enumerate(grid.specs):
        path = tmp_path / f"{i}.safetensors"
        sha = save_head(path, head_from_grid(grid, i, CLASSES, {"encoder": {"sha256": "ab"}}))
        assert sha == hashlib.sha256(path.read_bytes()).hexdigest()
        head = load_head(path, sha)
        assert (head.kind, head.representation, head.classes) == (spec.head, spec.representation, CLASSES)
        assert head.context == {"encoder": {"sha256": "ab"}}
        assert torch.equal(head.logits(feats[spec.representation]), every[i])
    record = load_head(tmp_path / "0.safetensors").record()
    assert record["normalization"].startswith("batchnorm") and record["bn_eps"] == 1e-5


@pytest.mark.parametrize("variant", ["msn", "sklearn"])
def test_logreg_heads_keep_float64_and_their_logits(trained, tmp_path, variant):
    _, feats, labels = trained
    model = fit_logreg(feats["lastPOOL"], labels, 5, 0.01, variant=variant, max_iter=50)
    save_head(tmp_path / "h.safetensors", head_from_logreg(model, "lastPOOL", CLASSES))
    head = load_head(tmp_path / "h.safetensors")
    assert head.tensors["weight"].dtype == torch.float64 and head.logreg_variant == variant
    assert set(head.tensors) == ({"weight", "bias", "center"} if variant == "sklearn" else {"weight"})
    assert torch.equal(head.logits(feats["lastPOOL"]), model.logits(feats["lastPOOL"]))


def test_changed_foreign_and_malformed_files_are_refused(trained, tmp_path):
    grid, _, _ = trained
    path = tmp_path / "h.safetensors"
    sha = save_head(path, head_from_grid(grid, 4, CLASSES))
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match the sha256 its result records"):
        load_head(path, sha)
    save_file({"weight": torch.zeros(8, 5)}, tmp_path / "plain.safetensors")
    with pytest.raises(CheckpointError, match="is not an ijepa-eval head file"):
        load_head(tmp_path / "plain.safetensors")
    torch.save({"weight": torch.zeros(8, 5)}, tmp_path / "pickle.safetensors")
    with pytest.raises(CheckpointError, match="head file .*pickle.safetensors is unreadable"):
        load_head(tmp_path / "pickle.safetensors")
    with pytest.raises(CheckpointError, match="is missing"):
        load_head(tmp_path / "none.safetensors")


def test_inconsistent_heads_are_refused_before_writing(tmp_path):
    ok = {"weight": torch.zeros(8, 5), "bias": torch.zeros(5)}
    cases = [
        (SavedHead("linear", "lastPOOL", CLASSES[:4], ok), r"weight has shape \(8, 5\); expected \[features, 4"),
        (SavedHead("bn_linear", "lastPOOL", CLASSES, ok), "a bn_linear head holds"),
        (SavedHead("linear", "lastPOOL", CLASSES, ok | {"bias": torch.zeros(6)}), r"bias has shape \(6,\)"),
        (SavedHead("linear", "lastPOOL", CLASSES, ok | {"bias": torch.tensor([0, 0, 0, 0, float("nan")])}), "NaN"),
        (SavedHead("linear", "lastPOOL", ["a", "a", "b", "c", "d"], ok), "distinct"),
        (SavedHead("mlp", "lastPOOL", CLASSES, ok), "unknown kind 'mlp'"),
    ]
    for head, message in cases:
        with pytest.raises(CheckpointError, match=message):
            save_head(tmp_path / "x.safetensors", head)
    assert not list(tmp_path.iterdir())
