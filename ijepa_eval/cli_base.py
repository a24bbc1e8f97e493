"""What every room's ``commands`` module and the top-level ``cli`` share: the help formatter, a parser whose
usage errors are one line, and ``run_parsed``, which turns a command's outcome into an exit code.

It sits in the base layer so that a room's commands never import ``ijepa_eval.cli`` (the top, which
imports every room's commands) and so that ``python -m ijepa_eval.pretrain.train`` runs its one verb with
the same error handling as ``ijepa-eval pretrain``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

from ijepa_eval.errors import IjepaEvalError, describe_os_error


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


def run_parsed(parser: argparse.ArgumentParser, argv: list[str]) -> int:
    """Parse ``argv`` with ``parser`` (sub-commands set ``func``) and run the command; errors of the
    project's family print one line and return non-zero."""
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


def new_parser(description: str, epilog: str) -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    """The ``ijepa-eval`` parser with ``--debug``, and the sub-parsers the rooms' ``register`` fill."""
    parser = Parser(prog="ijepa-eval", description=description, epilog=epilog, formatter_class=HelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    return parser, parser.add_subparsers(dest="command", metavar="COMMAND")
