"""The head a frozen-probe result reports, kept as a safetensors file next to the result JSON.

One file holds everything needed to turn cached features into that result's logits again: the weights
(``weight`` [F, C], ``bias`` [C]), for BatchNorm heads the BN statistics and affine (``bn.running_mean``,
``bn.running_var``, ``bn.weight``, ``bn.bias`` [F]), for scikit-learn-style logistic regression the training
mean it centres with (``center`` [F]), and in the safetensors metadata (strings only) a JSON ``head`` record:
kind, representation, the feature normalisation the probe applies, the classes in label order, and a
``context`` (encoder, transform, features) that a user of the head checks against its own features.

safetensors holds tensors and strings and nothing that executes on load, so a head file from anyone is safe
to open. The logits are computed by the probes' own modules (a one-head :class:`LinearGrid`, a
:class:`LogRegModel`), so re-applying a head runs the very operations the probe ran.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes

from ijepa_eval.errors import CheckpointError
from ijepa_eval.io import atomic_open
from ijepa_eval.probes.linear import BN_EPS, HeadSpec, LinearGrid, LinearTrainConfig
from ijepa_eval.probes.logreg import LogRegModel, LogRegVariant
from ijepa_eval.probes.metrics import topk_predictions

FORMAT, FORMAT_VERSION = "ijepa-eval-head", 1
RESULT_FORMAT = "safetensors-head-v1"  # a result JSON's head_file.format
HEAD_SUFFIX = ".head.safetensors"
PREDICT_BATCH = 4096  # rows per batch, as probes.linear.predict_grid
HeadKind = Literal["linear", "bn_linear", "logreg"]
NORMALIZATION = {"linear": "none", "bn_linear": "batchnorm (eval-mode running statistics, then affine)",
                 "msn": "per-sample centring over features, then L2 (cyanure preprocess, MSN logistic_eval)",
                 "sklearn": "centring with the training mean (center), then L2"}
BN_KEYS = ("bn.running_mean", "bn.running_var", "bn.weight", "bn.bias")


@dataclass
class SavedHead:
    """A reported head: ``tensors`` by the names above, the record's fields, and free ``context``."""

    kind: HeadKind
    representation: str
    classes: list[str]
    tensors: dict[str, torch.Tensor]
    logreg_variant: LogRegVariant | None = None  # logreg only
    context: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def normalization(self) -> str:
        return NORMALIZATION[self.logreg_variant if self.kind == "logreg" else self.kind]

    def record(self) -> dict[str, Any]:
        return {"kind": self.kind, "representation": self.representation, "normalization": self.normalization,
                "logreg_variant": self.logreg_variant, "bn_eps": BN_EPS if self.kind == "bn_linear" else None,
                "num_classes": self.num_classes, "classes": self.classes, "context": self.context}

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """[N, C] logits of features ``x`` [N, F] (the head's representation), on ``x``'s device."""
        return self.logits_fn(x.device)(x)

    def logits_fn(self, device: torch.device | str = "cpu") -> Callable[[torch.Tensor], torch.Tensor]:
        """The head built once on ``device``: features [N, F] -> logits [N, C], by the probe's own module."""
        if self.kind == "logreg":
            t = {k: v.to(device) for k, v in self.tensors.items()}
            model = LogRegModel(t["weight"], t.get("bias"), t.get("center"), 0.0, self.logreg_variant or "msn")
            return model.logits
        grid = self.grid(device)
        return lambda x: grid.logits({self.representation: x})[0]

    @torch.no_grad()
    def topk(self, x: torch.Tensor, device: torch.device | str = "cpu", allowed: Sequence[int] | None = None,
             batch_size: int = PREDICT_BATCH) -> torch.Tensor:
        """[N, k] best classes (of all classes, or among ``allowed``), best first, on CPU; in the row batches
        of the probes' own ``predict_grid``, so a reported head's predictions are reproduced bit for bit."""
        logits_fn = self.logits_fn(device)
        cols = None if allowed is None else torch.as_tensor(allowed, dtype=torch.int64, device=device)
        out = []
        for rows in x.split(batch_size):
            logits = logits_fn(rows.to(device))
            top = topk_predictions(logits if cols is None else logits[:, cols])
            out.append((top if cols is None else cols[top]).cpu())
        return torch.cat(out)

    def grid(self, device: torch.device | str = "cpu") -> LinearGrid:
        """This head as a one-head :class:`LinearGrid` (whose ``logits`` the linear probes report)."""
        t = {k: v.to(device) for k, v in self.tensors.items()}
        dim = t["weight"].shape[0]
        spec = HeadSpec(self.representation, self.kind, 1.0, 0.0)  # lr and wd do not enter the logits
        grid = LinearGrid([spec], {self.representation: dim}, self.num_classes, LinearTrainConfig(), device=device)
        (group,) = grid.groups.values()
        group.weight = t["weight"].unsqueeze(1)
        group.bias = t["bias"].unsqueeze(0)
        if self.kind == "bn_linear":
            group.affine = [t["bn.weight"].unsqueeze(0), t["bn.bias"].unsqueeze(0)]
            grid.bn_stats[self.representation] = (t["bn.running_mean"], t["bn.running_var"])
        return grid


def head_from_grid(grid: LinearGrid, index: int, classes: list[str], context: dict[str, Any] | None = None) -> SavedHead:
    """Head ``index`` (in ``grid.specs`` order) of a trained grid, its BN statistics included."""
    spec = grid.specs[index]
    group = next(g for (rep, bn), g in grid.groups.items() if rep == spec.representation and index in g.members)
    p = group.members.index(index)
    tensors = {"weight": group.weight[:, p], "bias": group.bias[p]}
    if spec.head == "bn_linear":
        mean, var = grid.bn_stats[spec.representation]
        tensors |= dict(zip(BN_KEYS, (mean, var, group.affine[0][p], group.affine[1][p]), strict=True))
    return SavedHead(spec.head, spec.representation, list(classes),
                     {k: v.detach().cpu().clone() for k, v in tensors.items()}, context=dict(context or {}))


def head_from_logreg(model: LogRegModel, representation: str, classes: list[str],
                     context: dict[str, Any] | None = None) -> SavedHead:
    """A fitted logistic regression (its float64 weights kept as they are)."""
    tensors = {"weight": model.weight, "bias": model.bias, "center": model.mean}
    return SavedHead("logreg", representation, list(classes),
                     {k: v.detach().cpu().clone() for k, v in tensors.items() if v is not None},
                     logreg_variant=model.variant, context=dict(context or {}))


def save_head(path: str | os.PathLike, head: SavedHead) -> str:
    """Write ``head`` atomically as safetensors; returns the file's sha256 (what the result JSON records)."""
    check_head(head, str(path))
    tensors = {k: v.detach().cpu().contiguous() for k, v in head.tensors.items()}
    data = safetensors_bytes(tensors, metadata={"format": FORMAT, "format_version": str(FORMAT_VERSION),
                                                "head": json.dumps(head.record(), default=str)})
    with atomic_open(path, "wb") as f:
        f.write(data)
    return hashlib.sha256(data).hexdigest()


def head_path(result_path: str | os.PathLike) -> Path:
    """``x__y__z.json`` -> ``x__y__z.head.safetensors`` (beside it, like the predictions file)."""
    path = Path(result_path)
    return path.with_name(path.name.removesuffix(".json") + HEAD_SUFFIX)


def write_head_file(result_path: str | os.PathLike, head: SavedHead) -> dict[str, str]:
    """Save ``head`` beside the result JSON; returns the result's ``head_file`` field."""
    path = head_path(result_path)
    return {"file": path.name, "sha256": save_head(path, head), "format": RESULT_FORMAT}


def load_head(path: str | os.PathLike, sha256: str | None = None) -> SavedHead:
    """Read and check a head file; with ``sha256`` (from the result JSON) a changed file is refused."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"head file {path} is missing; re-run the result's protocol to write it") from None
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise CheckpointError(f"head file {path} does not match the sha256 its result records; it was changed "
                              "after the run: restore it or re-run the protocol")
    try:
        with safe_open(path, "pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        if meta.get("format") != FORMAT or meta.get("format_version") != str(FORMAT_VERSION):
            raise CheckpointError(f"{path} is not an ijepa-eval head file (format {meta.get('format')!r} version "
                                  f"{meta.get('format_version')!r}; expected {FORMAT!r} {FORMAT_VERSION})")
        record = json.loads(meta["head"])
        head = SavedHead(kind=record["kind"], representation=record["representation"],
                         classes=list(record["classes"]), tensors=tensors,
                         logreg_variant=record.get("logreg_variant"), context=dict(record.get("context") or {}))
    except (SafetensorError, OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"head file {path} is unreadable ({type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''}); re-run the protocol") from None
    check_head(head, str(path))
    return head


def check_head(head: SavedHead, where: str) -> None:
    """Kind, tensor names, shapes and values fit together; one line naming the first mismatch."""
    def bad(what: str) -> CheckpointError:
        return CheckpointError(f"head {where}: {what}")

    if head.kind not in get_args(HeadKind):
        raise bad(f"unknown kind {head.kind!r}; expected one of {', '.join(get_args(HeadKind))}")
    if head.kind == "logreg" and head.logreg_variant not in get_args(LogRegVariant):
        raise bad(f"logreg variant {head.logreg_variant!r} is not one of {', '.join(get_args(LogRegVariant))}")
    if len(set(head.classes)) != len(head.classes) or not head.classes:
        raise bad("classes must be a non-empty list of distinct names")
    t = head.tensors
    required = {"weight"} | ({"bias"} if head.kind != "logreg" or head.logreg_variant == "sklearn" else set())
    required |= set(BN_KEYS) if head.kind == "bn_linear" else set()
    required |= {"center"} if head.kind == "logreg" and head.logreg_variant == "sklearn" else set()
    if set(t) != required:
        raise bad(f"holds tensors {sorted(t)}; a {head.kind} head holds {sorted(required)}")
    weight = t["weight"]
    if weight.ndim != 2 or weight.shape[1] != head.num_classes:
        raise bad(f"weight has shape {tuple(weight.shape)}; expected [features, {head.num_classes} classes]")
    dim = weight.shape[0]
    for name, v in t.items():
        shape = tuple(weight.shape) if name == "weight" else (head.num_classes,) if name == "bias" else (dim,)
        if tuple(v.shape) != shape or not v.is_floating_point():
            raise bad(f"{name} has shape {tuple(v.shape)} and dtype {v.dtype}; expected floating {shape}")
        if not torch.isfinite(v).all():
            raise bad(f"{name} holds NaN or Inf values")
