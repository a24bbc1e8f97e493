"""The training loop end to end on a tiny CLEVR-mini: exact resume, DDP = one process, the official
checkpoint layout read by load_encoder, the CLI, and a short tiny_cpu run that learns without collapsing."""

import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from ijepa_eval.cli import main as cli_main
from ijepa_eval.pretrain.configs import apply_overrides, get_config
from ijepa_eval.pretrain.loop import train

VENV_BIN = Path(sys.executable).parent
# vit_tiny width (192, 3 heads: load_encoder infers the heads from the width), 2 blocks, 4 x 4 patches
TINY = {"model_name": "vit_tiny", "depth": 2, "patch_size": 8, "crop_size": 32, "pred_depth": 1,
        "pred_emb_dim": 48, "batch_size": 8, "log_every": 2, "save_every": 100, "collapse_every": 2,
        "steps": 6, "min_keep": 2}  # fmt: skip


@pytest.fixture(scope="module")
def clevr_root(tmp_path_factory) -> str:
    from ijepa_eval.data.clevr_mini import render_clevr_mini

    root = tmp_path_factory.mktemp("clevr_mini")
    render_clevr_mini(root, n_train=40, n_val=16, size=32, seed=0, progress=False, workers=1)
    return str(root)


def tiny_config(root: str, **overrides):
    return apply_overrides(get_config("tiny_cpu"), {**TINY, "root": root, **overrides})


def losses(run_dir: Path) -> list[float]:
    rows = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


@pytest.fixture(scope="module")
def full_run(clevr_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("full")
    train(tiny_config(clevr_root, knn_every=3), out, progress=False)
    return out


def test_resume_replays_the_uninterrupted_run(full_run, clevr_root, tmp_path):
    train(tiny_config(clevr_root, stop_at=3), tmp_path, progress=False)
    assert len(losses(tmp_path)) == 3
    summary = train(tiny_config(clevr_root), tmp_path, resume=True, progress=False)
    assert losses(tmp_path) == losses(full_run)  # bit-identical on CPU
    timings = summary["timings"]  # a CPU run: no GPU-hours
    assert (timings["device"], timings["device_count"], timings["gpu_hours"]) == ("cpu", 1, None) and timings["wall_s"] > 0
    a = torch.load(full_run / "latest.pth.tar", weights_only=True)
    b = torch.load(tmp_path / "latest.pth.tar", weights_only=True)
    for key in ("encoder", "predictor", "target_encoder"):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key])
    assert a["step"] == b["step"] == 6


def test_resume_of_a_finished_run_is_a_no_op(full_run, clevr_root, tmp_path, capsys):
    import shutil

    run = shutil.copytree(full_run, tmp_path / "run")
    before = (run / "latest.pth.tar").read_bytes(), (run / "log.jsonl").read_text()
    summary = train(tiny_config(clevr_root), run, resume=True, progress=False)
    assert summary["steps"] == 6 and summary["last_loss"] is None
    assert json.loads(json.dumps(summary, allow_nan=False)) == summary  # valid JSON, no NaN
    assert "already at step 6 of 6" in capsys.readouterr().out
    assert ((run / "latest.pth.tar").read_bytes(), (run / "log.jsonl").read_text()) == before


def test_resume_with_another_optimizer_layout_is_a_checkpoint_error(full_run, clevr_root, tmp_path):
    from ijepa_eval.errors import CheckpointError

    state = torch.load(full_run / "latest.pth.tar", weights_only=True)
    state["opt"]["param_groups"][0]["params"].pop(0)  # e.g. written before the frozen pos embeds joined
    torch.save(state, tmp_path / "latest.pth.tar")
    with pytest.raises(CheckpointError, match="optimizer state does not match.*start a new run"):
        train(tiny_config(clevr_root), tmp_path, resume=True, progress=False)


class _SlowFirstWorker(torch.utils.data.Dataset):
    """Worker 0 (batches 0, 2, ...) is slow, so worker 1 finishes batch 1 before batch 0 is collated."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        info = torch.utils.data.get_worker_info()
        if info is not None and info.id == 0:
            time.sleep(0.05)
        return self.dataset[index]


def test_loader_workers_draw_each_steps_own_masks(full_run, clevr_root, tmp_path, monkeypatch):
    import ijepa_eval.pretrain.loop as train_module

    build = train_module.build_dataset
    monkeypatch.setattr(train_module, "build_dataset", lambda cfg, out: _SlowFirstWorker(build(cfg, out)))
    train(tiny_config(clevr_root, num_workers=2, stop_at=3), tmp_path, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()][1:]
    full = [json.loads(line) for line in (full_run / "log.jsonl").read_text().splitlines()][1:4]
    assert [(r["mask_enc"], r["mask_pred"], r["loss"]) for r in rows] == [
        (r["mask_enc"], r["mask_pred"], r["loss"]) for r in full
    ]


def test_log_rows_carry_schedules_masks_and_collapse_stats(full_run):
    rows = [json.loads(line) for line in (full_run / "log.jsonl").read_text().splitlines()]
    assert rows[0]["event"] == "start" and rows[0]["config"]["depth"] == 2
    steps = [r for r in rows if "loss" in r]
    assert [r["step"] for r in steps] == list(range(6))
    for key in ("lr", "wd", "momentum", "mask_enc", "mask_pred", "step_time", "images_per_s"):
        assert all(key in r for r in steps)
    assert steps[0]["momentum"] == 0.996 and steps[-1]["momentum"] == pytest.approx(0.996 + 5 * 0.004 / 6)
    assert all(r["target_std"] > 0 and r["target_erank"] >= 1 for r in steps if "target_std" in r)
    assert json.loads((full_run / "config.json").read_text())["crop_size"] == 32
    knn = [r["knn_top1"] for r in steps if "knn_top1" in r]
    assert len(knn) == 2 and all(0 <= v <= 100 for v in knn)


def test_checkpoint_has_the_official_layout(full_run):
    ckpt = torch.load(full_run / "latest.pth.tar", map_location="cpu", weights_only=True)
    official = {"encoder", "predictor", "target_encoder", "opt", "scaler", "epoch", "loss", "batch_size",
                "world_size", "lr"}  # fmt: skip
    assert official <= set(ckpt)
    assert ckpt["batch_size"] == 8 and ckpt["world_size"] == 1
    assert (ckpt["config"]["embed_dim"], ckpt["config"]["depth"], ckpt["config"]["num_heads"]) == (192, 2, 3)
    assert (
        ckpt["epoch"] == 6 // (40 // 8)
        and ckpt["lr"] == get_config("tiny_cpu").lr
        and ckpt["config"]["steps"] == 6
    )
    block = [
        f"{m}.{t}"
        for m in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2")
        for t in ("weight", "bias")
    ]
    encoder_keys = {
        "pos_embed",
        "patch_embed.proj.weight",
        "patch_embed.proj.bias",
        "norm.weight",
        "norm.bias",
    }
    encoder_keys |= {f"blocks.{i}.{k}" for i in range(2) for k in block}
    predictor_keys = {"mask_token", "predictor_pos_embed", "predictor_norm.weight", "predictor_norm.bias"}
    predictor_keys |= {f"predictor_{n}.{t}" for n in ("embed", "proj") for t in ("weight", "bias")}
    predictor_keys |= {f"predictor_blocks.0.{k}" for k in block}
    for key, names in (
        ("encoder", encoder_keys),
        ("target_encoder", encoder_keys),
        ("predictor", predictor_keys),
    ):
        assert set(ckpt[key]) == {"module." + n for n in names}
    assert ckpt["encoder"]["module.pos_embed"].shape == (1, 16, 192)
    assert ckpt["predictor"]["module.predictor_pos_embed"].shape == (1, 16, 48)
    assert ckpt["predictor"]["module.predictor_embed.weight"].shape == (48, 192)


class DDPNames(nn.Module):
    """Gives a module the state-dict names of its DistributedDataParallel wrapper (``module.`` prefix)."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module


def official_resume(path: Path, config: dict, use_bfloat16: bool) -> tuple[int, Exception | None]:
    """facebookresearch/ijepa's resume, step by step: src/helper.py init_model + init_opt (four AdamW groups,
    ``scaler = GradScaler() if use_bfloat16 else None``), the DDP wrap of src/train.py (world_size > 1), then
    load_checkpoint: torch.load, load the three state dicts (strict), opt, ``scaler.load_state_dict(
    checkpoint['scaler'])``; any exception is swallowed and training restarts at epoch 0."""
    from ijepa_eval.pretrain.model import build_ijepa

    encoder, predictor, _ = build_ijepa(img_size=config["crop_size"], patch_size=config["patch_size"],
                                        embed_dim=config["embed_dim"], depth=config["depth"],
                                        num_heads=config["num_heads"], pred_depth=config["pred_depth"],
                                        pred_emb_dim=config["pred_emb_dim"])  # fmt: skip
    target_encoder = copy.deepcopy(encoder)
    decay = [{"params": [p for n, p in m.named_parameters() if "bias" not in n and p.ndim != 1]}
             for m in (encoder, predictor)]  # fmt: skip
    no_decay = [{"params": [p for n, p in m.named_parameters() if "bias" in n or p.ndim == 1],
                 "WD_exclude": True, "weight_decay": 0} for m in (encoder, predictor)]  # fmt: skip
    opt = torch.optim.AdamW(decay + no_decay)
    # official: torch.cuda.amp.GradScaler(), enabled on a GPU node. Without CUDA it is disabled and its
    # load_state_dict returns early, so stand in the (enabled) CPU scaler: same class, same load_state_dict.
    scaler = torch.amp.GradScaler("cpu") if use_bfloat16 else None
    encoder, predictor, target_encoder = DDPNames(encoder), DDPNames(predictor), DDPNames(target_encoder)
    try:
        checkpoint = torch.load(path, map_location=torch.device("cpu"))
        epoch = checkpoint["epoch"]
        encoder.load_state_dict(checkpoint["encoder"])
        predictor.load_state_dict(checkpoint["predictor"])
        target_encoder.load_state_dict(checkpoint["target_encoder"])
        opt.load_state_dict(checkpoint["opt"])
        if scaler is not None:
            scaler.load_state_dict(checkpoint["scaler"])
    except Exception as err:  # the official code logs it and restarts
        return 0, err
    assert torch.equal(target_encoder.module.pos_embed, checkpoint["target_encoder"]["module.pos_embed"])
    return epoch, None


@pytest.mark.parametrize("bf16", [True, False])
def test_official_code_resumes_our_checkpoint_at_its_epoch(full_run, clevr_root, tmp_path, bf16):
    path = full_run / "latest.pth.tar"
    if not bf16:  # a fp32 run: the official code writes scaler None and resumes without a GradScaler
        train(tiny_config(clevr_root, bf16=False, steps=5), tmp_path, progress=False)
        path = tmp_path / "latest.pth.tar"
    state = torch.load(path, map_location="cpu", weights_only=True)
    fresh = torch.amp.GradScaler("cpu").state_dict()  # what the official code writes before its first update
    assert state["scaler"] == (fresh if bf16 else None) and state["epoch"] == 1
    assert official_resume(path, state["config"], use_bfloat16=bf16) == (1, None)
    if bf16:  # the old format (scaler None) falls into the official restart branch: this test can fail
        state["scaler"] = None
        torch.save(state, tmp_path / "old.pth.tar")
        epoch, err = official_resume(tmp_path / "old.pth.tar", state["config"], use_bfloat16=True)
        assert epoch == 0 and isinstance(err, TypeError)


def test_load_encoder_reads_the_target_encoder(full_run):
    from ijepa_eval.encoders import load_encoder
    from ijepa_eval.pretrain.model import build_encoder

    path = full_run / "latest.pth.tar"
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    x = torch.randn(2, 3, 32, 32)
    for branch, key in ((None, "target_encoder"), ("context", "encoder")):
        enc = load_encoder(str(path), branch=branch)
        assert (enc.embed_dim, enc.depth, enc.patch_size, enc.num_prefix_tokens) == (192, 2, 8, 0)
        assert enc.info["branch"] == (branch or "target")
        ours = build_encoder(32, 8, 192, 2, 3)
        ours.load_state_dict({k.removeprefix("module."): v for k, v in ckpt[key].items()})
        with torch.no_grad():
            assert torch.allclose(enc.forward_features(x), ours.eval()(x).mean(1), atol=1e-5)


@pytest.mark.parametrize("rank", [32, 3])  # healthy tokens, and tokens that span 3 directions
def test_collapse_rank_from_the_gram_matrix_equals_the_svd(rank):
    """eigvalsh of the D x D Gram matrix gives the singular values numpy's SVD of the tokens gives."""
    import numpy as np

    from ijepa_eval.pretrain.monitor import collapse_stats

    g = torch.Generator().manual_seed(rank)
    tokens = torch.randn(4, 16, rank, generator=g) @ torch.randn(rank, 32, generator=g)
    x = tokens.double().numpy()
    h = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5)  # F.layer_norm, no affine
    flat = h.reshape(-1, 32)
    s = np.linalg.svd(flat - flat.mean(0), compute_uv=False)
    p = s / s.sum()
    want = np.exp(-(p[p > 0] * np.log(p[p > 0])).sum())
    got = collapse_stats(tokens)
    assert got["target_erank"] == pytest.approx(want, rel=1e-6)
    assert got["target_std"] == pytest.approx(h.std(0, ddof=1).mean(), rel=1e-5)
    assert (got["target_erank"] < 6) == (rank == 3)


def test_cuda_rng_state_is_the_current_gpus_and_resumes_on_fewer_gpus(monkeypatch):
    """Saved: the current GPU's generator only. Restored: that one; an older checkpoint's list of every visible
    GPU's states restores the current GPU's entry, and a node showing fewer GPUs than it lists is no IndexError."""
    from ijepa_eval.pretrain import checkpoint as ckpt

    restored, current = [], {"index": 0}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: current["index"])
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": torch.tensor([7 + current["index"]]))
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: pytest.fail("every GPU's state is not saved"))
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device="cuda": restored.append(int(state)))
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: pytest.fail("restores the current GPU only"))
    current["index"] = 1
    state = ckpt.rng_state()
    assert torch.equal(state["cuda"], torch.tensor([8]))
    ckpt.set_rng_state(state)
    ckpt.set_rng_state({**state, "cuda": [torch.tensor([i]) for i in range(8)]})  # written on 8 GPUs, rank 1
    current["index"] = 3
    ckpt.set_rng_state({**state, "cuda": [torch.tensor([0]), torch.tensor([1])]})  # written where 2 were visible
    assert restored == [8, 1]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # resumed on a CPU-only machine
    ckpt.set_rng_state(state)
    assert restored == [8, 1] and ckpt.rng_state()["cuda"] is None


def test_two_process_ddp_matches_one_process(clevr_root, tmp_path):
    # fixed-size blocks keep the per-rank batch truncation a no-op, so both runs see the same masks;
    # the ranks also accumulate 2 micro-batches (DDP no_sync), which crashed with static_graph=True
    common = [f"{k}={v}" for k, v in {**TINY, "steps": 3, "allow_overlap": "true"}.items()]
    single = tmp_path / "single"
    train(apply_overrides(get_config("tiny_cpu"), [*common, f"root={clevr_root}"]), single, progress=False)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "ijepa_eval.pretrain.train", "--config", "tiny_cpu", "--out", str(tmp_path / "ddp"),
           "--root", clevr_root, "--no-progress", *common, "batch_size=4", "grad_accum=2"]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    assert losses(tmp_path / "ddp") == pytest.approx(losses(single), rel=1e-4)
    a = torch.load(single / "latest.pth.tar", weights_only=True)["target_encoder"]
    b = torch.load(tmp_path / "ddp" / "latest.pth.tar", weights_only=True)
    assert b["world_size"] == 2 and b["batch_size"] == 4
    assert all(torch.allclose(a[k], b["target_encoder"][k], atol=1e-5) for k in a)


def test_cli_overrides_are_typed_and_checked(capsys):
    assert cli_main(["pretrain", "--out", "unused", "--print-config", "lr=5e-4", "crop_scale=0.4,1.0"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["lr"] == 5e-4 and printed["crop_scale"] == [0.4, 1.0] and printed["crop_size"] == 64
    assert cli_main(["pretrain", "--out", "unused", "--print-config", "lrr=1"]) == 2
    assert "unknown config key 'lrr'. Did you mean 'lr'?" in capsys.readouterr().err
    assert cli_main(["pretrain", "--out", "unused", "--print-config", "batch_size=big"]) == 2
    assert "batch_size='big'" in capsys.readouterr().err
    assert cli_main(["pretrain", "--config", "vith14", "--out", "unused"]) == 2
    assert "Did you mean 'vith14_in1k'?" in capsys.readouterr().err


def test_console_script_resume_without_checkpoint_fails_cleanly(tmp_path):
    done = subprocess.run([str(VENV_BIN / "ijepa-eval"), "pretrain", "--out", str(tmp_path), "--resume"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "no checkpoint at" in done.stderr and "without --resume" in done.stderr


def test_resume_from_a_truncated_checkpoint_is_a_one_line_error(full_run, clevr_root, tmp_path):
    from ijepa_eval.errors import CheckpointError

    data = (full_run / "latest.pth.tar").read_bytes()
    (tmp_path / "latest.pth.tar").write_bytes(data[: len(data) // 2])  # a copy cut off mid-write
    with pytest.raises(CheckpointError, match="truncated") as err:
        train(tiny_config(clevr_root), tmp_path, resume=True, progress=False)
    assert "\n" not in str(err.value)


def test_tiny_cpu_run_learns_without_collapse(clevr_root, tmp_path):
    # the tiny_cpu model and optimiser (64 px, 8 x 8 patches) on the 40 test images, 150 steps
    cfg = apply_overrides(get_config("tiny_cpu"), {"root": clevr_root, "steps": 150, "batch_size": 16})
    train(cfg, tmp_path, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    values = [r["loss"] for r in rows if "loss" in r]
    assert sum(values[-10:]) / 10 < 0.8 * sum(values[:5]) / 5
    stats = [r for r in rows if "target_std" in r]
    floor = get_config("tiny_cpu")
    assert stats and stats[-1]["target_std"] > floor.collapse_std_floor
    assert stats[-1]["target_erank"] > floor.collapse_rank_floor


def test_gradient_accumulation_matches_the_full_batch(full_run, clevr_root, tmp_path):
    train(tiny_config(clevr_root, grad_accum=2, stop_at=3), tmp_path, progress=False)
    assert losses(tmp_path) == pytest.approx(losses(full_run)[:3], rel=1e-5)


def test_slurm_without_submitit_is_a_clear_error(capsys, tmp_path):
    try:  # submitit is optional; this checks the message users get without it
        import submitit  # noqa: F401

        pytest.skip("submitit is installed here")
    except ImportError:
        pass
    assert cli_main(["pretrain", "--out", str(tmp_path), "--slurm-nodes", "1"]) == 2
    assert "pip install submitit" in capsys.readouterr().err
