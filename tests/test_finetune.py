"""End-to-end fine-tuning (in1k_1pct_finetune): recipe sources, timm parts checked against MAE's formulas,
honest selection order, exact resume, torchrun, and a run on CLEVR-mini against the frozen probe."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ijepa_eval.cli import main
from ijepa_eval.data import get_dataset
from ijepa_eval.data.clevr_mini import render_clevr_mini
from ijepa_eval.data.synthetic import write_imagenet
from ijepa_eval.encoders import load_encoder
from ijepa_eval.errors import CheckpointError, ConfigError
from ijepa_eval.finetune import train as train_module
from ijepa_eval.finetune.config import FinetuneSpec, batch_plan, default_micro_batch
from ijepa_eval.finetune.model import build_classifier, build_optimizer, lr_at
from ijepa_eval.leaderboard.comparison import reference_cell
from ijepa_eval.leaderboard.records import load_results
from ijepa_eval.protocols import RECIPES_DIR, load_recipe, run_protocol
from ijepa_eval.protocols import finetuning as run_module
from ijepa_eval.protocols.finetune_widths import for_width
from ijepa_eval.protocols.finetuning import run_finetune
from ijepa_eval.results import load_predictions, load_result, predictions_path
from ijepa_eval.stats import metric_intervals, paired_test

sys.path.insert(0, str(Path(__file__).parent))
from fixtures_checkpoints import write_ijepa_checkpoint, write_mae_checkpoint  # noqa: E402

# RandAugment, erasing, mixup + cutmix (soft targets), drop path: every random path of the loop
ALL_RANDOM = ["finetune.reprob=0.25", "finetune.mixup=0.8", "finetune.cutmix=1.0", "finetune.drop_path=0.1"]
FOLDER = ["dataset.name=folder", "batch_size=8", "finetune.blr=0.01", "finetune.warmup_epochs=1"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("ft")
    write_ijepa_checkpoint(d / "tiny.pth.tar", depth=4, img_size=32)
    return {"dir": d, "ckpt": d / "tiny.pth.tar",
            "folder": write_imagenet(d / "folder", n_classes=4, n_train_per_class=8, n_val_per_class=3,
                                      split_file_per_class=6)}


def finetune(world, tmp_path, *overrides, **kwargs):
    opts = dict(root=world["folder"], out_dir=tmp_path / "out", cache_dir=tmp_path / "cache", device="cpu",
                num_workers=0, progress=False)
    return run_finetune("in1k_1pct_finetune", world["ckpt"], overrides=[*FOLDER, *overrides], **{**opts, **kwargs})


# ------------------------------------------------------------------------------------------------ recipe


@pytest.mark.parametrize("name,tags", [("in1k_1pct_finetune", r"\[A\.2\]|\[MAE\]"),
                                       ("in1k_1pct_finetune_semivit", r"\[CMD\]|\[DEF\]")])
def test_recipe_cites_a_source_for_every_hyperparameter_and_declares_deviations(name, tags):
    r = load_recipe(name)
    assert (r.probe, r.dataset.name, r.finetune.keep) == ("finetune", "imagenet_1pct", "last")
    assert len(r.deviations) >= 4 and r.reference
    lines = (RECIPES_DIR / f"{name}.yaml").read_text().split("\nfinetune:\n")[1].split("\nselection")[0]
    for line in lines.splitlines():
        assert re.search(rf"#.*({tags}|ours|memory only)", line), f"no source for: {line.strip()}"
    with pytest.raises(ConfigError, match="does not retrain"):
        load_recipe(name, ["selection.retrain_on_full_train=true"])
    with pytest.raises(ConfigError, match="nothing to select on test; add finetune.keep=best"):
        load_recipe(name, ["selection.split=test"])
    with pytest.raises(ConfigError, match="unknown value for 'finetune.keep' 'bset'"):
        load_recipe(name, ["finetune.keep=bset"])


def test_ijepa_recipe_takes_appendix_a2_per_model_size():
    """I-JEPA App. A.2: lr / wd 3e-5 / 5e-2 for ViT-L, 3e-5 / 4e-1 for ViT-H; the rest is shared."""
    for width, wd in ((1024, 0.05), (1280, 0.4)):
        r, sizes = for_width("in1k_1pct_finetune", width)
        f = r.finetune
        assert (r.epochs, r.batch_size, f.blr, f.weight_decay, f.layer_decay, f.smoothing) == (50, 512, 3e-5, wd, 0.75, 0.1)
        assert (f.drop_path, f.reprob, f.mixup, f.cutmix, f.auto_augment) == (0.0, 0.0, 0.0, 0.0, "rand-m9-mstd0.5-inc1")
        assert sizes == {"width": width, "listed": ["1024", "1280"], "matched": True,
                         "applied": {"finetune.weight_decay": wd}}
    r, sizes = for_width("in1k_1pct_finetune", 192)  # a width A.2 does not give: MAE's default wd, recorded
    assert r.finetune.weight_decay == 0.05 and not sizes["matched"] and not sizes["applied"]


def test_semivit_recipe_is_finetune_md_per_model_size():
    """Semi-ViT FINETUNE.md, 1% ImageNet, 8 GPUs: per-GPU batch x 8, blr, layer decay, epochs, head."""
    want = {768: (100, 512, 5e-5, 1e-4, 0.65, "avg", "fc_norm"), 1024: (50, 512, 1e-3, 2e-3, 0.75, "avg", "fc_norm"),
            1280: (50, 128, 1e-2, 5e-3, 0.75, "cls", "final")}
    for width, row in want.items():
        r, _ = for_width("in1k_1pct_finetune_semivit", width)
        f = r.finetune
        assert (r.epochs, r.batch_size, f.blr, f.effective_lr(r.batch_size), f.layer_decay, f.pool, f.head_norm) == (
            pytest.approx(row[0]), row[1], pytest.approx(row[2]), pytest.approx(row[3]), row[4], row[5], row[6])
        assert (f.weight_decay, f.drop_path, f.reprob, f.mixup, f.cutmix, f.eval_every) == (0.05, 0.0, 0.0, 0.0, 0.0, 5)
    # the user's overrides win over the width's entry; the lr follows the batch (MAE's rule)
    r, _ = for_width("in1k_1pct_finetune_semivit", 1280, ["batch_size=256", "finetune.pool=avg"])
    assert (r.batch_size, r.finetune.pool, r.finetune.effective_lr(256)) == (256, "avg", pytest.approx(1e-2))


def test_by_width_entries_are_checked(tmp_path):
    bad = (RECIPES_DIR / "in1k_1pct_finetune.yaml").read_text().replace(
        '"1024": {finetune.weight_decay: 0.05}', '"1024": {finetune.weight_dekay: 0.05}')
    (tmp_path / "bad.yaml").write_text(bad)
    with pytest.raises(ConfigError, match=r"finetune.by_width entry for width 1024: .*'finetune.weight_dekay'.*"
                                          r"finetune.weight_decay"):
        for_width(tmp_path / "bad.yaml", 1024)
    for_width(tmp_path / "bad.yaml", 1280)  # other widths are unaffected
    with pytest.raises(ConfigError, match="by_width keys are encoder widths"):
        load_recipe("in1k_1pct_finetune", ["finetune.by_width={vit_l: {epochs: 2}}"])


# ------------------------------------------------------------------------------------------ timm parts


def test_layer_decay_groups_are_maes_param_groups_lrd(world):
    """timm's groups vs MAE util/lr_decay.py written out: scale decay^(L+1-id), no wd on 1-D/pos/cls."""
    encoder = load_encoder(world["ckpt"])
    spec = FinetuneSpec(layer_decay=0.5, weight_decay=0.3)
    model = build_classifier(encoder, 7, spec)
    opt = build_optimizer(model, spec)
    depth = len(model.blocks)
    got = {}
    names = {id(p): n for n, p in model.named_parameters()}
    for group in opt.param_groups:
        for p in group["params"]:
            got[names[id(p)]] = (group["lr_scale"], group["weight_decay"])
    assert set(got) == set(names.values())
    for name, p in model.named_parameters():
        if name in ("cls_token", "pos_embed") or name.startswith("patch_embed"):
            layer = 0
        elif name.startswith("blocks."):
            layer = int(name.split(".")[1]) + 1
        else:
            layer = depth + 1
        wd = 0.0 if p.ndim == 1 or name in ("pos_embed", "cls_token") else 0.3
        assert got[name] == (pytest.approx(0.5 ** (depth + 1 - layer)), wd), name
    assert got["head.weight"] == (1.0, 0.3) and got["blocks.0.attn.qkv.weight"][0] == pytest.approx(0.5 ** depth)


def test_lr_schedule_is_maes_warmup_then_half_cosine():
    spec = FinetuneSpec(warmup_epochs=5, min_lr=1e-6)
    assert lr_at(0.0, spec, 1e-3, 50) == 0.0
    assert lr_at(2.5, spec, 1e-3, 50) == pytest.approx(5e-4)
    assert lr_at(5.0, spec, 1e-3, 50) == pytest.approx(1e-3)
    assert lr_at(27.5, spec, 1e-3, 50) == pytest.approx(1e-6 + (1e-3 - 1e-6) * 0.5)
    assert lr_at(50.0, spec, 1e-3, 50) == pytest.approx(1e-6)


def test_head_reads_the_frozen_feature_and_fc_norm_is_maes_head(world):
    encoder = load_encoder(world["ckpt"])
    x = torch.randn(3, 3, 32, 32)
    final = build_classifier(encoder, 5, FinetuneSpec(drop_path=0.3)).eval()
    with torch.no_grad():
        pooled = final.forward_head(final.forward_features(x), pre_logits=True)
        torch.testing.assert_close(pooled, encoder.forward_features(x, 1, "avg"))
        assert final.head.weight.std() < 1e-4 and not final.head.bias.any()  # MAE: trunc_normal std 2e-5, zero bias
        mae = build_classifier(encoder, 5, FinetuneSpec(head_norm="fc_norm")).eval()
        tokens = mae.blocks(mae.norm_pre(mae._pos_embed(mae.patch_embed(x))))
        want = torch.nn.functional.layer_norm(tokens.mean(1), (encoder.embed_dim,), eps=1e-6)  # fresh fc_norm
        torch.testing.assert_close(mae.forward_head(mae.forward_features(x), pre_logits=True), want)
    assert all(p.requires_grad for p in final.parameters()) and not any(p.requires_grad for p in encoder.parameters())
    with pytest.raises(ConfigError, match="finetune.pool=cls needs a model with a cls token"):
        build_classifier(encoder, 5, FinetuneSpec(pool="cls"))


def test_cls_models_get_maes_two_heads(tmp_path):
    """A cls-token model (MAE): --cls_token = the cls token after the pretrained norm (lastCLS); --global_pool
    (Semi-ViT's ViT-L setting) = mean of the PATCH tokens of the last block, no pretrained norm, a new LayerNorm."""
    write_mae_checkpoint(tmp_path / "mae.pth", encoder_only=True)
    encoder = load_encoder(tmp_path / "mae.pth")
    assert encoder.has_class_token
    x = torch.randn(2, 3, encoder.img_size, encoder.img_size)
    last_block = []
    with torch.no_grad():
        cls = build_classifier(encoder, 5, FinetuneSpec()).eval()  # pool auto -> cls
        torch.testing.assert_close(cls.forward_head(cls.forward_features(x), pre_logits=True),
                                   encoder.forward_features(x, 1, "cls"))
        avg = build_classifier(encoder, 5, FinetuneSpec(pool="avg")).eval()  # lastPOOL: norm, then patch mean
        torch.testing.assert_close(avg.forward_head(avg.forward_features(x), pre_logits=True),
                                   encoder.forward_features(x, 1, "avg"))
        gp = build_classifier(encoder, 5, FinetuneSpec(pool="avg", head_norm="fc_norm")).eval()
        gp.blocks[-1].register_forward_hook(lambda mod, inp, out: last_block.append(out))
        got = gp.forward_head(gp.forward_features(x), pre_logits=True)
        patches = last_block[0][:, encoder.num_prefix_tokens:]  # cls token excluded, as models_vit's x[:, 1:]
        want = torch.nn.functional.layer_norm(patches.mean(1), (encoder.embed_dim,), eps=1e-6)
        torch.testing.assert_close(got, want)
        assert not torch.allclose(got, encoder.forward_features(x, 1, "avg"), atol=1e-3)  # the pretrained norm is gone


# --------------------------------------------------------------------------------- selection and resume


def test_reported_split_is_opened_only_after_the_last_epoch(world, tmp_path, monkeypatch):
    events = []
    real_get, real_save = run_module.get_dataset, train_module.save_checkpoint
    monkeypatch.setattr(run_module, "get_dataset", lambda name, root, split, **kw: (
        events.append(("open", split)), real_get(name, root, split, **kw))[1])
    monkeypatch.setattr(train_module, "save_checkpoint", lambda work, model, opt, state, ident: (
        events.append(("epoch", state.epoch)), real_save(work, model, opt, state, ident))[1])
    path = finetune(world, tmp_path, "epochs=3", "finetune.keep=best", "selection.holdout_fraction=0.25")
    assert events == [("open", "train"), ("open", "train"), ("epoch", 1), ("epoch", 2), ("epoch", 3), ("open", "val")]
    r = load_result(path)
    assert r.selection["split"] == "train_holdout" and r.adaptation == "finetune"
    assert r.dataset["sizes"] == {"train": 32, "fit": 24, "holdout": 8, "val": 12}
    kept = int(r.selection["head"].split()[1])
    best = max(r.heads, key=lambda h: (h["scores"]["train_holdout"]["top1"], -h["epoch"]))
    assert kept == best["epoch"] and r.heads[kept - 1]["scores"]["test"] == r.metrics
    assert r.timings["device"] == "cpu" and r.timings["device_count"] == 1  # env.compute_cost, as frozen probes
    assert r.timings["gpu_hours"] is None and r.timings["wall_s"] > 0 and r.optimizer["effective_lr"] == 0.01 * 8 / 256
    # the paper's / MAE's convention on request: every epoch scored on the reported split, all of train used
    events.clear()
    r = load_result(finetune(world, tmp_path / "t", "epochs=2", "finetune.keep=best", "selection.split=test"))
    assert events == [("open", "train"), ("open", "val"), ("epoch", 1), ("epoch", 2), ("open", "val")]
    assert r.selection["split"] == "test" and r.dataset["sizes"]["fit"] == 32
    assert all("test" in h["scores"] for h in r.heads)  # scored each epoch: recorded as selected on test


def test_resume_after_a_kill_continues_bit_exactly(world, tmp_path, monkeypatch):
    straight = finetune(world, tmp_path / "a", "epochs=3", "finetune.keep=best", *ALL_RANDOM)
    real_save = train_module.save_checkpoint

    def killed_after_epoch_2(work, model, opt, state, ident):
        real_save(work, model, opt, state, ident)
        if state.epoch == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "save_checkpoint", killed_after_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        finetune(world, tmp_path / "b", "epochs=3", "finetune.keep=best", *ALL_RANDOM)
    monkeypatch.setattr(train_module, "save_checkpoint", real_save)
    with pytest.raises(ConfigError, match="pass --resume to continue it .* or --restart"):
        finetune(world, tmp_path / "b", "epochs=3", "finetune.keep=best", *ALL_RANDOM)
    with pytest.raises(CheckpointError, match="written for another config"):
        finetune(world, tmp_path / "b", "epochs=3", "finetune.keep=best", resume=True)
    resumed = finetune(world, tmp_path / "b", "epochs=3", "finetune.keep=best", *ALL_RANDOM, resume=True)
    a, b = load_result(straight), load_result(resumed)
    assert [h["scores"] for h in a.heads] == [h["scores"] for h in b.heads]  # losses, holdout and test, exactly
    assert a.metrics == b.metrics and a.selection == b.selection
    (wa,), (wb,) = (list((tmp_path / d / "cache" / "finetune").rglob("latest.pth")) for d in ("a", "b"))
    sa, sb = torch.load(wa, weights_only=True)["model"], torch.load(wb, weights_only=True)["model"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a.heads[0]["scores"]["train"]["loss"] != a.heads[-1]["scores"]["train"]["loss"]


def test_micro_batches_split_memory_not_the_gradient(world, tmp_path):
    """batch 8 in one pass vs as gradient-accumulated micro-batches: the same losses; a micro-batch that does
    not divide the batch takes the next split that does (at most 3 -> 4 x 2), and the result records it."""
    one = load_result(finetune(world, tmp_path / "one", "epochs=2"))
    two = load_result(finetune(world, tmp_path / "two", "epochs=2", "finetune.micro_batch=3"))
    np.testing.assert_allclose([h["scores"]["train"]["loss"] for h in one.heads],
                               [h["scores"]["train"]["loss"] for h in two.heads], rtol=1e-5)
    assert {k: one.optimizer[k] for k in ("batch_size", "world_size", "micro_batch", "accum_steps")} == {
        "batch_size": 8, "world_size": 1, "micro_batch": 8, "accum_steps": 1}  # tiny model: default fits 8
    assert (two.optimizer["micro_batch"], two.optimizer["accum_steps"]) == (2, 4)
    with pytest.raises(ConfigError, match="finetune.micro_batch=0 is out of range"):
        finetune(world, tmp_path / "zero", "epochs=1", "finetune.micro_batch=0")


@pytest.mark.parametrize(("embed_dim", "tokens", "expected"), [
    (1280, 256, 32),   # I-JEPA ViT-H/14 at 224 (no cls token): the README's one-GPU command
    (1280, 257, 32),   # MAE ViT-H/14 (cls)
    (1280, 1024, 8),   # ViT-H/14 at 448: a quarter
    (1408, 256, 16),   # ViT-g
    (1024, 197, 64),   # ViT-L/16
    (768, 197, 128),   # ViT-B/16
    (384, 197, 256),   # ViT-S/16
    (1100, 197, 32),   # between L and H: H's budget, the safer one
    (4096, 257, 16),   # wider than any row: ViT-g's
    (1280, 100_000, 1),
])
def test_default_micro_batch_by_model_size(embed_dim, tokens, expected):
    assert default_micro_batch(embed_dim, tokens) == expected


@pytest.mark.parametrize(("batch", "world", "most", "plan"), [
    (512, 1, 32, (32, 16)),  # ViT-H on one GPU: 16 passes of 32 per step of 512
    (512, 8, 32, (32, 2)),   # 8 GPUs: 64 each, 2 passes
    (512, 8, 64, (64, 1)),
    (512, 1, 48, (32, 16)),  # 48 does not divide 512: the fewest passes with equal micro-batches <= 48
    (96, 1, 40, (32, 3)),
    (13, 1, 4, (1, 13)),     # a prime share: single images
    (8, 2, 100, (4, 1)),     # the cap above the share: one pass
])
def test_batch_plan_keeps_the_global_batch(batch, world, most, plan):
    p = batch_plan(batch, world, most)
    assert (p.micro_batch, p.accum_steps) == plan
    assert p.micro_batch <= most and p.per_device * world == batch


def test_batch_plan_refuses_a_batch_the_processes_cannot_share():
    with pytest.raises(ConfigError, match="batch_size 510 is not divisible by 8 processes; use a multiple of 8"):
        batch_plan(510, 8, 32)


def test_cli_runs_the_recipe_on_the_imagenet_1pct_layout(world, tmp_path, capsys):
    args = ["finetune", "--ckpt", str(world["ckpt"]), "--root", str(world["folder"]), "--device", "cpu",
            "--cache-dir", str(tmp_path), "--out", str(tmp_path), "--quiet", "--workers", "0", "--label", "tiny",
            "epochs=1", "batch_size=8", "dataset.options={allow_custom_split: true}"]
    assert main(args) == 0
    (path,) = tmp_path.glob("*.json")
    out = capsys.readouterr().out
    assert f"result: {path}" in out and "kept epoch 1 (no selection: last epoch)" in out
    assert path.name.startswith("tiny-") and path.name.endswith("__target__in1k_1pct_finetune.json")
    r = load_result(path)
    assert r.dataset["sizes"] == {"train": 24, "fit": 24, "val": 12} and r.dataset["split_info"]["official"] is False
    assert r.protocol["deviations"] == load_recipe("in1k_1pct_finetune").deviations and r.selection["split"] == "none"
    assert main(args) == 0 and "skip: " in capsys.readouterr().out  # same model, recipe and config: reused
    # forced rerun of a finished run: its checkpoint is named for what it is, and --resume evaluates it again
    assert main([*args, "--no-skip-existing"]) == 2
    assert "earlier fine-tuning run of this result" in capsys.readouterr().err
    assert main([*args, "--no-skip-existing", "--resume"]) == 0
    assert load_result(path).metrics == r.metrics


def test_the_encoders_width_picks_its_by_width_entry_and_the_result_records_it(world, tmp_path, capsys):
    width = load_encoder(world["ckpt"]).embed_dim
    table = f"finetune.by_width={{'{width}': {{finetune.weight_decay: 0.3, epochs: 1}}, '99999': {{epochs: 7}}}}"
    r = load_result(finetune(world, tmp_path / "a", table))
    assert (r.optimizer["weight_decay"], len(r.heads)) == (0.3, 1)  # this width's entry, not the recipe's 0.05 / 50
    assert r.protocol["by_width"] == {"width": width, "listed": [str(width), "99999"], "matched": True,
                                      "applied": {"finetune.weight_decay": 0.3, "epochs": 1}}
    assert r.protocol["config"]["finetune"]["weight_decay"] == 0.3
    capsys.readouterr()
    r = load_result(finetune(world, tmp_path / "b", "epochs=1", "finetune.by_width={'99999': {epochs: 7}}"))
    assert r.protocol["by_width"]["matched"] is False and len(r.heads) == 1
    assert f"lists settings for widths 99999, not {width}; using the recipe's base values" in capsys.readouterr().out


def test_cli_errors_are_one_line(world, tmp_path, capsys):
    args = ["finetune", "--ckpt", str(world["ckpt"]), "--root", str(world["folder"]), "--device", "cpu",
            "--cache-dir", str(tmp_path), "--out", str(tmp_path), "--quiet", "--workers", "0"]
    assert main([*args, *FOLDER, "batch_size=64"]) == 2
    assert "32 training images < one batch of 64; lower batch_size" in capsys.readouterr().err
    assert main([*args, "--recipe", "cifar100"]) == 2
    assert "frozen 'linear' probe; run it with `ijepa-eval run`" in capsys.readouterr().err
    run = ["run", "in1k_1pct_finetune", "--ckpt", str(world["ckpt"]), "--root", str(world["folder"]),
           "--device", "cpu", "--cache-dir", str(tmp_path), "--out", str(tmp_path), "--quiet", "--seeds", "3"]
    assert main(run) == 2  # was: the seeds were silently dropped and one unseeded fine-tuning ran
    assert "--seeds retrains a frozen probe's head" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.json"))


# ------------------------------------------------------------------------ predictions, intervals, pairing


def recomputed(pred) -> dict[str, float]:
    """top1 / top5 from the predictions file alone, counted here (not through ijepa_eval.stats)."""
    n = len(pred.labels)
    return {"top1": int((pred.top5[:, 0] == pred.labels).sum()) / n * 100.0,
            "top5": int((pred.top5 == pred.labels[:, None]).any(1).sum()) / n * 100.0}


def test_result_carries_predictions_and_intervals_like_a_frozen_probe(world, tmp_path, capsys):
    path = finetune(world, tmp_path, "epochs=2", "seed=3")
    r = load_result(path)
    pred = load_predictions(r, path)
    assert r.predictions["format"] == "npz-v1" and path.parent / r.predictions["file"] == predictions_path(path)
    val = get_dataset("folder", world["folder"], "val")
    np.testing.assert_array_equal(pred.indices, np.arange(len(val)))  # every test image, in dataset order
    np.testing.assert_array_equal(pred.labels, val.labels)
    assert pred.top5.shape == (12, 4)  # 4 classes: top-min(5, C)
    assert recomputed(pred) == {m: r.metrics[m] for m in ("top1", "top5")}
    assert (r.metrics_ci, r.ci) == metric_intervals(pred.labels, pred.top5, seed=3)  # the recipe's seed
    for metric, (lo, hi) in r.metrics_ci.items():
        assert lo <= r.metrics[metric] <= hi, metric
    assert r.metrics_ci["top1"][0] < r.metrics_ci["top1"][1]  # 12 examples: a real spread
    capsys.readouterr()
    assert load_result(finetune(world, tmp_path, "epochs=2", "seed=3")).date == r.date  # intact: reused
    assert "skip: " in capsys.readouterr().out
    predictions_path(path).write_bytes(b"changed")  # a broken predictions file is re-run, not trusted
    assert load_predictions(load_result(finetune(world, tmp_path, "epochs=2", "seed=3", resume=True)), path)


def test_compare_tests_a_finetuned_result_against_a_frozen_one_on_the_same_examples(world, tmp_path, capsys):
    common = dict(root=world["folder"], out_dir=tmp_path / "runs", cache_dir=tmp_path / "cache", device="cpu",
                  num_workers=0, progress=False)
    frozen = run_protocol("folder_linear", world["ckpt"], label="frozen", overrides=[
        "epochs=2", "batch_size=8", "grid.heads=[linear]", "grid.lr_mults=[1.0]", "grid.wds=[0.0]"], **common)
    tuned = finetune(world, tmp_path, "epochs=1", "finetune.blr=0.0000001", label="tuned", out_dir=tmp_path / "runs")
    a, b = load_result(tuned), load_result(frozen)
    assert a.dataset["test_split"] == b.dataset["test_split"] == "val"
    assert a.dataset["fingerprint"]["val"] == b.dataset["fingerprint"]["val"]  # the same test examples
    capsys.readouterr()
    assert main(["compare", "--results", str(tmp_path / "runs"), "--reference", "frozen"]) == 0
    out = capsys.readouterr().out
    pa, pb = load_predictions(a, tuned), load_predictions(b, frozen)
    t = paired_test(pa.labels, pa.top5, pb.top5)
    want = (f"in1k_1pct_finetune@folder: tuned (target) − frozen (target) (folder_linear) = {t.diff:+.1f} "
            f"top1 points [{t.diff_ci[0]:+.1f}, {t.diff_ci[1]:+.1f}] (McNemar score test, Tango interval): "
            f"significantly worse (p = {t.p_value:.3g}, unadjusted)")
    assert "than frozen (target) at 5%, unadjusted" in out and want in out, out
    assert t.verdict == "loss" and "(lastPOOL/finetune)" in out  # lr ~0: the head has not learned
    # only across adaptations: a frozen result is still tested against the same protocol's, never another's
    (frozen_row,) = load_results([frozen])
    assert reference_cell({"knn@folder": frozen_row}, "folder_linear", frozen_row) is None


# ---------------------------------------------------------------------------------- CLEVR-mini, torchrun


def test_finetuning_on_clevr_mini_beats_the_frozen_probe_or_learns(world, tmp_path):
    root = render_clevr_mini(tmp_path / "clevr", n_train=64, n_val=24, size=32, progress=False, workers=1)
    common = dict(root=root, out_dir=tmp_path / "out", cache_dir=tmp_path / "cache", device="cpu",
                  num_workers=0, progress=False)
    frozen = load_result(run_protocol("clevr_count", world["ckpt"], overrides=["epochs=10", "batch_size=16"], **common))
    tuned = load_result(run_finetune(
        "in1k_1pct_finetune", world["ckpt"], overrides=[
            "dataset.name=clevr_count", "dataset.test_split=test", "epochs=8", "batch_size=16", "finetune.blr=0.05",
            "finetune.warmup_epochs=1", "finetune.auto_augment=null", "finetune.crop_scale=[0.9, 1.0]",
            "finetune.hflip=0.5"], **common))
    assert tuned.dataset["sizes"]["test"] == frozen.dataset["sizes"]["test"] == 24  # the same reported split
    losses = [h["scores"]["train"]["loss"] for h in tuned.heads]
    print(f"CLEVR-mini count: fine-tuned {tuned.metrics['top1']:.1f} vs frozen {frozen.metrics['top1']:.1f}; "
          f"loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    assert tuned.metrics["top1"] > frozen.metrics["top1"] or losses[-1] < losses[0] - 0.05


@pytest.mark.slow
def test_torchrun_two_processes_match_one(world, tmp_path):
    """Two gloo ranks of batch 4 see the single process's batches of 8: same losses and weights."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    common = ["finetune", "--ckpt", str(world["ckpt"]), "--root", str(world["folder"]), "--device", "cpu",
              "--quiet", "--workers", "0", *FOLDER, "epochs=2"]
    one = finetune(world, tmp_path / "one", "epochs=2")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
           "ijepa_eval.cli", *common, "--cache-dir", str(tmp_path / "two" / "cache"), "--out", str(tmp_path / "two")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    a, (b_path,) = load_result(one), list((tmp_path / "two").glob("*.json"))
    b = load_result(b_path)
    assert b.timings["device_count"] == 2 and b.timings["device"] == "cpu" and a.dataset["sizes"] == b.dataset["sizes"]
    la = np.array([h["scores"]["train"]["loss"] for h in a.heads])
    lb = np.array([h["scores"]["train"]["loss"] for h in b.heads])
    np.testing.assert_allclose(la, lb, rtol=1e-4)
    assert abs(a.metrics["top1"] - b.metrics["top1"]) < 1e-6
    # the predictions file (no stray temporaries), gathered from both ranks back into dataset order
    pa, pb = load_predictions(a, one), load_predictions(b, b_path)
    written = sorted(p.name for p in (tmp_path / "two").iterdir() if p.is_file())
    assert written == sorted([b_path.name, predictions_path(b_path).name])
    np.testing.assert_array_equal(pb.indices, pa.indices)
    np.testing.assert_array_equal(pb.labels, pa.labels)
    assert recomputed(pb) == {m: b.metrics[m] for m in ("top1", "top5")}


# ------------------------------------------------------------------------------------- tables, compare


def paper_data_result(runs, label, protocol, top1, meta, adaptation):
    """A result JSON on the paper's 1% data (12,811 train / 50,000 val, official split file)."""
    from ijepa_eval.results import ResultRecord, write_result

    head = ({"name": "epoch 50", "representation": "lastPOOL", "head": "finetune"} if adaptation == "finetune" else
            {"name": "lastPOOL/linear/lr1x/wd0", "representation": "lastPOOL", "head": "linear"})
    record = ResultRecord(
        protocol={"name": protocol, "task": protocol, "version": 1, "config": {}},
        model={"source": f"/ckpts/{label}.pth", "sha256": label.encode().hex().ljust(64, "0"), "format": "mae",
               "branch": None, "arch": {}, "label": label, "meta": meta},
        features={}, metrics={"top1": top1, "top5": top1 + 5}, adaptation=adaptation,
        dataset={"name": "imagenet_1pct", "train_split": "train", "val_split": None, "test_split": "val",
                 "num_classes": 1000, "sizes": {"train": 12811, "val": 50000}, "split_info": {"official": True}},
        selection={"split": "none" if adaptation == "finetune" else "train_holdout", "head": head["name"]},
        heads=[{**head, "scores": {"test": {"top1": top1}}}],
    )
    return write_result(record, runs)


def test_table2_shows_finetuned_and_frozen_cells_and_compares_like_with_like(tmp_path, capsys):
    import pandas as pd

    runs = tmp_path / "runs"
    mae = {"method": "MAE", "arch_name": "ViT-H/14", "epochs": 1600, "data": "IN-1k"}
    ijepa = {"method": "I-JEPA", "arch_name": "ViT-H/14", "epochs": 300, "data": "IN-1k"}
    paper_data_result(runs, "mae_h14", "in1k_1pct_finetune", 70.0, mae, "finetune")
    paper_data_result(runs, "mae_h14", "in1k_1pct_linear", 60.0, mae, "frozen")
    paper_data_result(runs, "ijepa_h14", "in1k_1pct_linear", 72.0, ijepa, "frozen")
    paper_data_result(runs, "ijepa_h14", "in1k_1pct_finetune", 75.0, ijepa, "finetune")
    assert main(["table", str(runs), "--out", str(tmp_path / "t")]) == 0
    t2 = pd.read_csv(tmp_path / "t" / "table2.csv", dtype=str, keep_default_na=False).set_index(["Method", "Arch"])
    cols = ["in1k_1pct paper", "in1k_1pct paper adaptation", "in1k_1pct ours finetune", "in1k_1pct ours frozen",
            "in1k_1pct ours", "in1k_1pct Δ"]
    assert t2.loc[("MAE", "ViT-H/14"), cols].tolist() == ["71.5", "finetune", "70.00", "60.00", "70.00", "-1.50"]
    # I-JEPA's own Table 2 numbers are fine-tuned (App. A.2): Δ is against our fine-tuned result, never the frozen
    assert t2.loc[("I-JEPA", "ViT-H/14"), cols].tolist() == ["73.3", "finetune", "75.00", "72.00", "75.00", "+1.70"]
    assert t2.loc[("DINO", "ViT-B/8"), "in1k_1pct paper adaptation"] == "frozen"
    # rows no source lets us compare like with like: reference only, with a note under the table
    for row, how in ((("data2vec", "ViT-L/16"), "unknown"), (("SimCLRv2", "RN152(2x)"), "finetune"),
                     (("BYOL", "RN200(2x)"), "finetune")):
        assert t2.loc[row, "in1k_1pct paper adaptation"] == how and t2.loc[row, "in1k_1pct paper source"].endswith("[ref]")
        assert t2.loc[row, ["in1k_1pct ours", "in1k_1pct Δ"]].tolist() == ["—", "—"]
    assert not t2["in1k_1pct paper source"].isin(["", "—"]).any()  # every paper cell names its source
    md = (tmp_path / "t" / "table2.md").read_text()
    assert "[ref] Reference only:" in md and "the paper prints 'RN151'" in md and "no source found" in md
    assert "`ours finetune` and `ours frozen`" in (tmp_path / "t" / "table2.md").read_text()
    t6 = pd.read_csv(tmp_path / "t" / "table6.csv", dtype=str)  # a frozen-only column keeps its plain cells
    assert "in1k_1pct_linear paper adaptation" not in t6.columns
    # compare: a fine-tuned and a frozen result of one model side by side
    assert main(["compare", "--results", str(runs), "--protocols", "in1k_1pct_finetune,in1k_1pct_linear"]) == 0
    flat = pd.read_csv(runs / "compare.csv", dtype=str).set_index("model")
    assert flat.loc["mae_h14", ["in1k_1pct_finetune", "in1k_1pct_linear"]].tolist() == ["70.0", "60.0"]
    assert flat.loc["mae_h14", "in1k_1pct_finetune head"] == "lastPOOL/finetune"
