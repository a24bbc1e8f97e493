"""`ijepa-eval` command line: one sub-command per verb, each registered by the room that owns it.

Every room exposes ``register(subparsers)`` in a ``commands`` module; the parser it adds sets
``func=callable(args) -> int | None``. Errors of the project's family print one line and exit non-zero.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ijepa_eval.cli_base import new_parser, run_parsed

# Order here is the order in `ijepa-eval --help`.
COMMAND_MODULES = (
    "ijepa_eval.encoders.commands",  # inspect
    "ijepa_eval.features.commands",  # features, cache
    "ijepa_eval.protocols.commands",  # linear, lowshot, transfer, clevr, knn, run, suite
    "ijepa_eval.shift.commands",  # shift
    "ijepa_eval.leaderboard.commands",  # table, compare, check, plot
    "ijepa_eval.pretrain.commands",  # pretrain
)

EPILOG = """examples:
  ijepa-eval inspect IN1K-vit.h.14-300e.pth.tar
  ijepa-eval linear  --ckpt IN1K-vit.h.14-300e.pth.tar --root /data/imagenet
  ijepa-eval suite   --ckpt run/latest.pth.tar
  ijepa-eval compare ijepa.pth.tar mae.pth dino.pth --protocols cifar100,clevr_count
  ijepa-eval pretrain --config tiny_cpu --out runs/tiny
Run `ijepa-eval COMMAND --help` for each command's options and examples."""


def build_parser() -> argparse.ArgumentParser:
    parser, subparsers = new_parser(
        "Frozen-feature evaluation of self-supervised ViTs (the I-JEPA paper's protocols).", EPILOG
    )
    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name != module_name:  # a real import error inside the module
                raise
            continue  # room not built yet
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_parsed(build_parser(), sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
