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
