"""``python -m ijepa_eval.pretrain.train``: the torchrun entry of ``ijepa-eval pretrain``.

    ijepa-eval pretrain --config tiny_cpu --out runs/tiny                      # 2 CPU cores, minutes
    torchrun --standalone --nproc_per_node 8 -m ijepa_eval.pretrain.train \\
        --config vith14_in1k --out runs/vith14 root=/data/imagenet                # one node, 8 GPUs
    ijepa-eval pretrain --config vith14_in1k --out runs/vith14 --slurm-nodes 2   # SLURM via submitit

Same options, checks and one-line errors as ``ijepa-eval pretrain`` (``pretrain.commands``), without
importing the other rooms' commands; the loop itself is ``pretrain.loop.train``.
"""

from __future__ import annotations

import sys

import torch.distributed as dist

from ijepa_eval.cli_base import new_parser, run_parsed
from ijepa_eval.pretrain.commands import register


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``torchrun -m ijepa_eval.pretrain.train`` (same options as ``ijepa-eval pretrain``)."""
    parser, subparsers = new_parser("I-JEPA pretraining.", "")
    register(subparsers)
    code = run_parsed(parser, ["pretrain", *(sys.argv[1:] if argv is None else argv)])
    if dist.is_initialized():
        dist.destroy_process_group()
    return code


if __name__ == "__main__":
    raise SystemExit(main())
