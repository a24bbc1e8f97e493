"""`ijepa-eval inspect` on every format, the shared checkpoint flags, and error exits."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures_checkpoints import (
    tiny_vit_state_dict,
    write_dino_checkpoint,
    write_ijepa_checkpoint,
    write_mae_checkpoint,
    write_malicious_checkpoint,
    write_safetensors,
    write_state_dict,
)

from ijepa_eval.cli import main
from ijepa_eval.encoders.commands import add_checkpoint_args, encoder_from_args, summarize_keys


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    write_ijepa_checkpoint(d / "ijepa.pth.tar")
    write_mae_checkpoint(d / "mae.pth")
    write_mae_checkpoint(d / "mae_release.pth", encoder_only=True)
    write_dino_checkpoint(d / "dino.pth", "dino")
    write_dino_checkpoint(d / "ibot.pth", "ibot")
    write_state_dict(d / "plain.pth", tiny_vit_state_dict())
    write_safetensors(d / "plain.safetensors", tiny_vit_state_dict())
    write_state_dict(d / "w96.pth", tiny_vit_state_dict(embed_dim=96, num_heads=4, depth=2))
    return d


def inspect_json(capsys, *argv) -> dict:
    assert main(["inspect", *map(str, argv), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("name, fmt, branch, meta_key", [
    ("ijepa.pth.tar", "ijepa", "target", "epoch"), ("mae.pth", "mae", None, "args"),
    ("mae_release.pth", "wrapped", None, None), ("dino.pth", "dino", "teacher", "args"),
    ("ibot.pth", "ibot", "teacher", "args"), ("plain.pth", "state_dict", None, None),
    ("plain.safetensors", "state_dict", None, "format"),
])
def test_inspect_each_format(files, capsys, name, fmt, branch, meta_key):
    report = inspect_json(capsys, files / name)
    assert report["format"] == fmt and report["branch"] == branch
    assert report["arch"]["embed_dim"] == 192 and report["arch"]["num_heads"] == 3 and report["unknown"] == []
    assert report["params"] > 1_000_000
    if meta_key:
        assert meta_key in report["meta"]
    assert main(["inspect", str(files / name)]) == 0
    text = capsys.readouterr().out
    assert f"format:   {fmt}" in text and "params:" in text


def test_inspect_text_summarises_dropped_keys_and_branches(files, capsys):
    assert main(["inspect", str(files / "ijepa.pth.tar"), "--branch", "context"]) == 0
    out = capsys.readouterr().out
    assert "branches: target, context*" in out
    assert "predictor.predictor_blocks (24 keys)" in out and "predictor.mask_token (1 keys)" in out
    assert "  batch_size: 128" in out and "  lr: 0.001" in out
    assert summarize_keys(["decoder_blocks.0.a", "decoder_blocks.1.b", "mask_token", "head.mlp.0.w"]) == {
        "decoder_blocks": 2, "mask_token": 1, "head.mlp": 1}
    assert main(["inspect", str(files / "plain.safetensors")]) == 0
    assert "branches: - (one network in this file)" in capsys.readouterr().out


def test_inspect_reports_unknown_heads_and_accepts_arch(files, capsys):
    report = inspect_json(capsys, files / "w96.pth")
    assert report["unknown"] == ["num_heads"] and report["arch"]["embed_dim"] == 96
    assert main(["inspect", str(files / "w96.pth")]) == 0
    assert "num_heads=? (unknown: pass --arch)" in capsys.readouterr().out
    report = inspect_json(capsys, files / "w96.pth", "--arch", '{"num_heads": 4}')
    assert report["unknown"] == [] and report["arch"]["num_heads"] == 4


def test_errors_exit_nonzero_with_one_line(files, tmp_path, capsys):
    evil = tmp_path / "evil.pth"
    write_malicious_checkpoint(evil, tmp_path / "marker")
    cases = [
        ([str(evil)], "--trust-checkpoint"),
        ([str(files / "dino.pth"), "--branch", "target"], "unknown branch 'target'"),
        ([str(files / "w96.pth"), "--arch", "{bad json"], "--arch is not valid JSON"),
        ([str(tmp_path / "nope.pth")], "neither an existing checkpoint file"),
    ]
    for argv, fragment in cases:
        assert main(["inspect", *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("ijepa-eval inspect: error:") and fragment in err and err.count("\n") == 1
    assert not (tmp_path / "marker").exists()


def test_shared_checkpoint_flags_build_the_encoder(files):
    parser = argparse.ArgumentParser()
    add_checkpoint_args(parser)
    args = parser.parse_args(["--ckpt", str(files / "w96.pth"), "--arch", '{"num_heads": 4}'])
    enc = encoder_from_args(args)
    assert enc.info["arch"]["num_heads"] == 4 and enc.info["branch"] is None
    args = parser.parse_args(["--ckpt", str(files / "ijepa.pth.tar"), "--branch", "context"])
    assert encoder_from_args(args, img_size=64).img_size == 64


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit):
        main(["inspect", "--help"])
    out = capsys.readouterr().out
    assert "examples:" in out and "--trust-checkpoint" in out and "--branch" in out


def test_console_script_subprocess(files):
    """One real run of the installed console script (imports torch: a few seconds)."""
    exe = Path(sys.executable).with_name("ijepa-eval")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([str(exe), "inspect", str(files / "dino.pth"), "--branch", "student"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "branches: teacher, student*" in run.stdout
