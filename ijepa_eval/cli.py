"""`ijepa-eval` command line: one sub-command per verb, each registered by the room that owns it.

Every room exposes ``register(subparsers)`` in a ``commands`` module; the parser it adds sets
``func=callable(args) -> int | None``. Errors of the project's family print one line and exit non-zero.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys

from ijepa_eval.errors import IjepaEvalError, describe_os_error

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


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps example blocks as written and shows defaults, except where they say nothing: unset (None) or
    off (False) values, and help texts that already state their default."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False) or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """Usage errors are one line too (argparse prints the whole usage block first); sub-commands inherit it."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
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
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:
            # `key=value` overrides may stand between options (`epochs=2 --label x`): argparse stops collecting
            # a positional nargs="*" list at the first option, so gather the stragglers here.
            if all("=" in tok and not tok.startswith("-") for tok in extra) and hasattr(args, "overrides"):
                args.overrides = [*(args.overrides or []), *extra]
            else:
                parser.error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as exit_:  # usage errors (one line, see Parser) return their code; --help exits as usual
        if not exit_.code:
            raise
        return exit_.code if isinstance(exit_.code, int) else 2
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    prefix = f"ijepa-eval {args.command}: error:"
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows up here for short outputs
        return code
    except IjepaEvalError as err:
        if args.debug:
            raise
        print(f"{prefix} {err}", file=sys.stderr)
        return err.exit_code
    except BrokenPipeError:  # `ijepa-eval inspect CKPT | head -1`: the reader left; stop quietly after one line
        with contextlib.suppress(OSError):  # later flushes of the dead stdout must not raise at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        print(f"{prefix} stdout was closed before the output was complete (broken pipe)", file=sys.stderr)
        return 141  # 128 + SIGPIPE, what a shell reports for a reader that left early
    except OSError as err:  # read-only folder, disk full, permissions: the OS's reason, in one line
        if args.debug:
            raise
        print(f"{prefix} {describe_os_error(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ijepa-eval {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
