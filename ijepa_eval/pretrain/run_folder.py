"""The run folder's files besides the checkpoint layout (``pretrain.checkpoint``): ``latest.pth.tar``,
``log.jsonl`` (one JSON row per step) and ``config.json`` (the resolved config)."""

from __future__ import annotations

import json
from pathlib import Path

from ijepa_eval.io import atomic_write_json, atomic_write_text

LOG_NAME, CKPT_NAME = "log.jsonl", "latest.pth.tar"


def start_log(out_dir: Path, resolved: dict, *, resumed_at: int | None, **event) -> None:
    """A fresh log (or, when resuming at step s, the log cut back to steps before s), config.json, and the
    run's ``start`` row."""
    log_path = out_dir / LOG_NAME
    if resumed_at is not None:
        rewrite_log(log_path, resumed_at - 1)
    else:
        atomic_write_text(log_path, "")
    atomic_write_json(out_dir / "config.json", resolved)
    append_log(log_path, {"event": "start", "step": resumed_at or 0, **event, "config": resolved})


def rewrite_log(path: Path, upto_step: int) -> None:
    """On resume, drop log rows newer than the checkpoint (they will be produced again)."""
    if path.exists():
        rows = [r for r in path.read_text().splitlines() if r and json.loads(r).get("step", -1) <= upto_step]
        atomic_write_text(path, "".join(r + "\n" for r in rows))


def append_log(path: Path, row: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
