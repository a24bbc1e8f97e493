"""`ijepa-eval` command line: one sub-command per verb, each registered by the room that owns it.

Every room exposes ``register(subparsers)`` in a ``commands`` module; the parser it adds sets
``func=callable(args) -> int | None``. Errors of the project's family print one line and exit non-zero.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ijepa_eval.errors import IjepaEvalError

# Order here is the order in `ijepa-eval --help`.
COMMAND_MODULES = (
    "ijepa_eval.encoders.commands",  # inspect
    "ijepa_eval.features.commands",  # features, cache
    "ijepa_eval.protocols.commands",  # linear, lowshot, transfer, clevr, knn, run, suite
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


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps example blocks as written and shows defaults."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ijepa-eval",
        description="Frozen-feature evaluation of self-supervised ViTs (the I-JEPA paper's protocols).",
        epilog=EPILOG,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
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
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # `key=value` overrides may stand between options (`epochs=2 --label x`): argparse stops collecting a
        # positional nargs="*" list at the first option, so gather the stragglers here.
        if all("=" in tok and not tok.startswith("-") for tok in extra) and hasattr(args, "overrides"):
            args.overrides = [*(args.overrides or []), *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except IjepaEvalError as err:
        if args.debug:
            raise
        print(f"ijepa-eval {args.command}: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
