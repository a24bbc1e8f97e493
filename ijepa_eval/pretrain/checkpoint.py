"""Training checkpoints in the official I-JEPA format (``src/train.py`` save_checkpoint), plus resume state.

Official keys: ``encoder``, ``predictor``, ``target_encoder`` (DDP state dicts: every key starts with
``module.``), ``opt``, ``scaler`` (a GradScaler state for bf16 runs, else None), ``epoch``, ``loss``,
``batch_size``, ``world_size``, ``lr``. Extra keys: ``config`` (the resolved PretrainConfig as plain
types), ``step`` (global steps done) and ``resume`` (RNG states, mask-collator counter). Everything is
tensors and plain Python types, so ``torch.load(weights_only=True)`` reads it, official code ignores the
extra keys, and the encoders room's I-JEPA detector (``encoder`` + ``target_encoder``) matches.
"""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import torch
from torch import nn

from ijepa_eval.errors import CheckpointError
from ijepa_eval.io import atomic_torch_save
from ijepa_eval.pretrain.masks import MaskCollator

PREFIX = "module."
OFFICIAL_KEYS = ("encoder", "predictor", "target_encoder", "opt", "scaler", "epoch", "loss", "batch_size",
                 "world_size", "lr")  # fmt: skip


def _prefixed(module: nn.Module) -> dict[str, torch.Tensor]:
    return {PREFIX + k: v.detach().cpu() for k, v in module.state_dict().items()}


def _unprefixed(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k.removeprefix(PREFIX): v for k, v in state.items()}


def rng_state() -> dict[str, Any]:
    """The RNG streams a resumed run continues. CUDA: the current device's generator only (None without
    CUDA); every visible GPU's states would not restore on a node that shows fewer GPUs (``set_rng_state_all``
    raises IndexError), and this process draws from no other GPU."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": pos,
            "has_gauss": has_gauss,
            "gauss": gauss,
        },  # fmt: skip
        "python": list(random.getstate()[1]),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    cuda = state["cuda"]
    if isinstance(cuda, list):  # written before issue 19: every visible GPU's state; keep the current one's
        index = torch.cuda.current_device() if torch.cuda.is_available() else len(cuda)
        cuda = cuda[index] if index < len(cuda) else None
    if cuda is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(cuda)
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["gauss"]))  # fmt: skip
    random.setstate((3, tuple(state["python"]), None))


def official_scaler_state(bf16: bool) -> dict[str, Any] | None:
    """The ``scaler`` entry the official code expects: with ``use_bfloat16`` it builds a GradScaler and its
    ``load_checkpoint`` calls ``scaler.load_state_dict(checkpoint['scaler'])``, silently restarting at
    epoch 0 when that raises (None or an empty dict both do). Our bf16 loop needs no loss scaling, so we
    write the state of a fresh, enabled GradScaler with the official (default) settings; fp32 runs write
    None, as the official code does. The state holds plain floats and ints (``weights_only`` safe).
    """
    if not bf16:
        return None
    # a CUDA GradScaler is disabled (state {}) where CUDA is missing; the CPU one writes the same keys
    return torch.amp.GradScaler("cpu").state_dict()


def save_checkpoint(
    path: str | os.PathLike,
    *,
    encoder: nn.Module,
    predictor: nn.Module,
    target_encoder: nn.Module,
    optimizer: torch.optim.Optimizer,
    epoch: int,
    loss: float,
    batch_size: int,
    world_size: int,
    lr: float,
    config: dict[str, Any],
    step: int,
    bf16: bool,
) -> None:
    """Write atomically: a crash mid-save leaves the previous checkpoint intact. ``bf16`` is the run's
    ``use_bfloat16``: it decides the ``scaler`` entry (see :func:`official_scaler_state`)."""
    state = {
        "encoder": _prefixed(encoder),
        "predictor": _prefixed(predictor),
        "target_encoder": _prefixed(target_encoder),
        "opt": optimizer.state_dict(),
        "scaler": official_scaler_state(bf16),
        "epoch": int(epoch),
        "loss": float(loss),
        "batch_size": int(batch_size),
        "world_size": int(world_size),
        "lr": float(lr),
        "config": config,
        "step": int(step),
        # the collator's next call must produce step `step`'s masks
        "resume": {"rng": rng_state(), "mask_collator": {"counter": int(step) - 1}},
    }
    atomic_torch_save(state, path)  # a full disk: the OSError in one line, the previous checkpoint intact


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load safely (tensors and plain types only) and check it is a resumable pretraining checkpoint."""
    from ijepa_eval.encoders.read import read_file  # the one safe reader: one-line errors for bad files

    if not os.path.exists(path):
        raise CheckpointError(f"no checkpoint at {path}; run without --resume to start a new run")
    state, _ = read_file(path)
    missing = [k for k in (*OFFICIAL_KEYS, "config", "step", "resume") if k not in state]
    if missing:
        raise CheckpointError(
            f"{path} lacks {', '.join(missing)}: only `ijepa-eval pretrain` checkpoints resume"
        )
    return state


def load_training_state(
    path: str | os.PathLike,
    encoder: nn.Module,
    predictor: nn.Module,
    target_encoder: nn.Module,
    optimizer: torch.optim.Optimizer,
    collator: MaskCollator,
) -> int:
    """Restore models, optimizer, RNG and mask counter in place; return the step to continue from."""
    state = read_checkpoint(path)
    for module, key in ((encoder, "encoder"), (predictor, "predictor"), (target_encoder, "target_encoder")):
        try:
            module.load_state_dict(_unprefixed(state[key]))
        except RuntimeError as err:
            first = str(err).strip().splitlines()[0]
            raise CheckpointError(
                f"{path}: {key} does not match the config ({first}); resume with its config"
            ) from err
    try:
        optimizer.load_state_dict(state["opt"])
    except ValueError as err:  # parameter groups of another layout (an older version, another model)
        raise CheckpointError(f"{path}: optimizer state does not match ({err}); start a new run") from err
    set_rng_state(state["resume"]["rng"])
    collator.load_state_dict(state["resume"]["mask_collator"])
    return int(state["step"])
