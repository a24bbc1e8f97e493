import subprocess
import sys

from ijepa_eval.cli import main
from ijepa_eval.errors import unknown_choice


def test_help_lists_examples(capsys):
    try:
        main(["--help"])
    except SystemExit as e:
        assert e.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "ijepa-eval inspect" in out


def test_no_command_exits_nonzero():
    proc = subprocess.run([sys.executable, "-m", "ijepa_eval.cli"], capture_output=True, text=True)
    assert proc.returncode != 0


def test_unknown_choice_suggests_and_lists():
    msg = unknown_choice("protocol", "cifar10", ["cifar100", "clevr_count", "knn"])
    assert "'cifar10'" in msg and "Did you mean 'cifar100'" in msg and "clevr_count, cifar100" not in msg
    assert msg.endswith("Available: cifar100, clevr_count, knn")


def test_overrides_may_stand_between_options(monkeypatch):
    import argparse

    from ijepa_eval import cli

    seen = {}

    def register(subparsers):
        p = subparsers.add_parser("probe")
        p.add_argument("--label")
        p.add_argument("overrides", nargs="*")
        p.set_defaults(func=lambda args: seen.update(vars(args)) or 0)

    real = cli.build_parser

    def build():
        parser = real()
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        register(sub)
        return parser

    monkeypatch.setattr(cli, "build_parser", build)
    assert cli.main(["probe", "epochs=2", "--label", "x", "lr=0.1"]) == 0
    assert seen["overrides"] == ["epochs=2", "lr=0.1"] and seen["label"] == "x"
    assert cli.main(["probe", "--bogus"]) == 2  # an unknown option is rejected (one line, exit 2)
