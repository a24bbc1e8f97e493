import re
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


def test_every_command_help_reads_cleanly():
    """No `(default: None)` / doubled defaults, no `%%` left from printf escaping; real defaults still shown."""
    import argparse

    from ijepa_eval.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert {"inspect", "features", "linear", "finetune", "compare", "table", "plot", "pretrain"} <= set(commands)
    for name, sub in commands.items():
        text = sub.format_help()
        assert "(default: None)" not in text and "(default: False)" not in text, name
        assert "%%" not in text and not re.search(r"\(default: [^)]*\)\s*\(default:", text), name
    assert "(default: 64)" in commands["features"].format_help()  # --batch-size
    assert "held-out 10% of the training split" in commands["finetune"].format_help()


def test_finetune_offers_no_seeds_flag_it_would_ignore(capsys):
    """--seeds retrains a probe head; fine-tuning used to accept it and silently do nothing."""
    proc = subprocess.run([sys.executable, "-m", "ijepa_eval.cli", "finetune", "--ckpt", "x.pth", "--seeds", "3"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "unrecognized arguments: --seeds" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
