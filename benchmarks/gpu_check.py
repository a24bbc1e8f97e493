"""`make gpu-check`: every CUDA path of ijepa-eval for a few steps at tiny size, one line per path.

The suite's tests run on CPU; this script is what runs the device code itself, in about a minute, so a
new GPU machine (or a new torch) shows a broken path before a long job does. `make bench-gpu` runs it
first. Each line: ``ok``/``FAIL``/``skip``, the path, what was checked, seconds; exit 1 when a path fails.

Paths: tiny I-JEPA pretraining with a resume (bf16, fused AdamW, CUDA RNG state), feature extraction
against an fp32 CPU forward, the free-memory rule, the linear head grid, logistic regression and kNN
against their CPU results, ``--aug paper`` chunked encoding, fine-tuning with micro-batches, the attentive
probe (an online epoch and a cached-token grid epoch against the CPU), and with 2+ GPUs the same under
torchrun with 2 processes (probe protocol, DDP fine-tuning, DDP pretraining).

    python benchmarks/gpu_check.py                # on a machine without CUDA every line says skip
    python benchmarks/gpu_check.py --device cpu   # the same checks on the CPU (gloo for torchrun): the script's own test
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

PATHS = ("pretrain", "extraction", "free-memory", "grid", "logreg", "knn", "aug-paper", "finetune", "attentive",
         "torchrun")
TINY = {"crop_size": 32, "patch_size": 8,
        "batch_size": 8, "num_workers": 0, "log_every": 1, "collapse_every": 2, "save_every": 2}
CLEVR = {"dataset.name": "clevr_count", "dataset.train_split": "train", "dataset.val_split": None,
         "dataset.test_split": "test"}
FINETUNE = {**CLEVR, "epochs": 1, "batch_size": 16, "finetune.by_width": {}}  # no ViT-L/H sizes here


class World:
    """What the checks share: the device, a scratch folder, CLEVR-mini and the tiny checkpoint."""

    def __init__(self, device: str, tmp: Path):
        import torch

        from ijepa_eval.data.clevr_mini import render_clevr_mini

        self.device, self.tmp = torch.device(device), tmp
        self.ckpt = tmp / "pretrain" / "latest.pth.tar"
        self.cache = tmp / "cache"
        self.clevr = render_clevr_mini(tmp / "clevr_mini", 64, 32, size=32, progress=False, workers=1)


def pretrain_config(world: World, **extra):
    from ijepa_eval.pretrain import apply_overrides, get_config

    return apply_overrides(get_config("tiny_cpu"), {**TINY, "root": str(world.clevr), **extra})


def check_pretrain(world: World) -> str:
    """4 steps with a checkpoint at 2 and 4, then a resume to 6: the resume restores the RNG states saved."""
    from ijepa_eval.pretrain import train

    first = train(pretrain_config(world, steps=6, stop_at=4), world.tmp / "pretrain", progress=False)
    resumed = train(pretrain_config(world, steps=6), world.tmp / "pretrain", resume=True, progress=False)
    rows = [json.loads(r) for r in (world.tmp / "pretrain" / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 6 and all(map(_finite, losses)), f"losses {losses}"
    assert any("target_erank" in r for r in rows), "the collapse monitor never ran"
    return (f"6 steps on {rows[0]['device']} (resumed at {first['steps']}), loss {losses[0]:.3f} -> "
            f"{resumed['last_loss']:.3f}, collapse monitor ran")


def encoder(world: World):
    from ijepa_eval.encoders import load_encoder

    return load_encoder(world.ckpt)


def dataset(name: str, world: World, split: str = "train", transform=None):
    from ijepa_eval.data import get_dataset

    return get_dataset(name, world.clevr, split, transform=transform)


def features(world: World, split: str = "train", enc=None):
    from ijepa_eval.features import get_features

    return get_features(enc or encoder(world), dataset("clevr_count", world, split), cache_dir=world.cache,
                        batch_size=16, num_workers=2 if world.device.type == "cuda" else 0, device=world.device,
                        progress=False)


def check_extraction(world: World) -> str:
    """Shards extracted on the device (bf16, stored float16) vs an fp32 forward on the CPU; the encoder goes
    back to the CPU afterwards (its weights must not hold GPU memory the probes need)."""
    import torch

    from ijepa_eval.data import eval_transform

    enc = encoder(world)
    fs = features(world, enc=enc)
    home = {p.device.type for p in enc.parameters()}
    assert home == {"cpu"}, f"after extraction the encoder's weights are on {home}, not back on the cpu"
    ds = dataset("clevr_count", world, transform=eval_transform("clevr_count", enc.img_size))
    x = torch.stack([ds[i][0] for i in range(8)])
    with torch.no_grad():
        want = enc.forward_features(x, n_last_blocks=4)
    got = torch.as_tensor(fs.representation("concatPOOL4")[:8], dtype=torch.float32)
    err = float((got - want).abs().max() / want.abs().max())
    assert err < 0.03, f"device features differ from the fp32 CPU forward by {err:.3g} (relative to the largest)"
    return f"{len(fs)} images, concatPOOL4 within {err:.1e} of fp32 CPU (relative max), encoder back on the cpu"


def check_free_memory(world: World) -> str:
    """PyTorch's reserve counts as free: after a 256 MiB tensor is freed the rule still sees its room."""
    import torch

    from ijepa_eval.devices import free_bytes

    if world.device.type != "cuda":
        assert free_bytes(world.device) is None
        return "host: not bounded (no CUDA device)"
    block = torch.empty(256 << 20, dtype=torch.uint8, device=world.device)
    del block
    driver = torch.cuda.mem_get_info(world.device)[0]
    free = free_bytes(world.device)
    assert free - driver >= 256 << 20, f"free_bytes {free} does not count the 256 MiB PyTorch holds in reserve"
    return f"{free / 2**30:.1f} GiB free, {(free - driver) / 2**20:.0f} MiB of it PyTorch's reserve"


def probe_inputs(world: World):
    import torch

    train, test = features(world), features(world, "test")
    return ({r: torch.as_tensor(train.representation(r)) for r in ("lastPOOL", "concatPOOL4")}, train.labels,
            torch.as_tensor(test.representation("lastPOOL")), test.labels, train.num_classes)


def check_grid(world: World) -> str:
    """8 heads, 3 epochs on the device vs the CPU: the same training losses (fp32; TF32 allowed)."""
    import numpy as np

    from ijepa_eval.probes import LinearTrainConfig, OptimizerConfig, fit_linear_grid, head_grid
    from ijepa_eval.probes.linear import resident

    feats, labels, _, _, classes = probe_inputs(world)
    specs = head_grid(["lastPOOL", "concatPOOL4"], ["bn_linear", "linear"], [1.0, 0.1], [5e-4])
    cfg = LinearTrainConfig(OptimizerConfig("lars", base_lr=0.1, base_batch=16), epochs=3, batch_size=16)
    runs = {d: fit_linear_grid(feats, labels, specs, cfg, classes, device=d, progress=False) for d in
            (world.device, "cpu")}
    (grid, stats), (_, cpu_stats) = runs[world.device], runs["cpu"]
    loss, cpu_loss = (np.array([s["loss"] for s in st]) for st in (stats, cpu_stats))
    assert np.allclose(loss, cpu_loss, rtol=1e-2), f"losses {loss} vs CPU {cpu_loss}"
    placed = {t.device for t in resident(feats, grid.device).values()}
    assert placed == {grid.device}, f"features stay on {placed}, not on {grid.device}, though they fit"
    return f"{len(specs)} heads on {grid.device} (features resident there), losses within 1% of the CPU run"


def check_logreg(world: World) -> str:
    import torch

    from ijepa_eval.probes import fit_logreg

    feats, labels, _, _, classes = probe_inputs(world)
    x, y = feats["lastPOOL"], torch.as_tensor(labels)
    got, want = (fit_logreg(x, y, classes, 0.0025, device=d) for d in (world.device, "cpu"))
    err = float((got.weight.cpu() - want.weight).abs().max())
    assert err < 1e-4, f"weights differ from the CPU fit by {err:.3g}"
    return f"float64 L-BFGS on {got.weight.device}, weights within {err:.1e} of the CPU fit"


def check_knn(world: World) -> str:

    from ijepa_eval.probes import knn_topk

    feats, labels, query, _, classes = probe_inputs(world)
    got = knn_topk(feats["lastPOOL"], labels, query, [1, 10, 20], classes, device=world.device)
    want = knn_topk(feats["lastPOOL"], labels, query, [1, 10, 20], classes)  # faiss on the host
    same = float((got[..., 0] == want[..., 0]).double().mean())
    assert same >= 0.99, f"only {same:.1%} of the top-1 predictions equal faiss's"
    return f"torch search on {world.device}: {same:.1%} of top-1 predictions equal faiss's"


def check_aug_paper(world: World) -> str:
    """The paper's augmented linear probe: a 32-image batch encoded in chunks of 8 (extraction batch size)
    trains the heads one 32-image forward trains (bf16: within 2%), then the protocol end to end."""
    import numpy as np
    import torch

    from ijepa_eval.data import train_transform
    from ijepa_eval.protocols import load_recipe, run_protocol
    from ijepa_eval.protocols.probing import LinearProbe
    from ijepa_eval.results import load_result

    overrides = ["aug=paper", "epochs=1", "batch_size=32", "selection.split=test", "grid.lr_mults=[1.0]",
                 "grid.wds=[0.0]"]
    enc = encoder(world)
    ds = dataset("clevr_count", world, transform=train_transform("clevr_count", enc.img_size))
    losses = []
    for chunk in (32, 8):
        probe = LinearProbe(load_recipe("clevr_count", [*overrides, f"extraction_batch_size={chunk}"]),
                            ["lastPOOL", "concatPOOL4"], ds.num_classes, world.device, progress=False)
        probe.fit_augmented(enc, ds, np.arange(len(ds)), num_workers=0)
        losses.append(torch.tensor([s["loss"] for s in probe.train_stats]))
    gap = float(((losses[1] - losses[0]).abs() / losses[0]).max())
    assert gap < 0.02, f"chunked encoding trains losses {losses[1].tolist()} vs one-shot {losses[0].tolist()}"
    path = run_protocol("clevr_count", world.ckpt, root=world.clevr, out_dir=world.tmp / "runs",
                        cache_dir=world.cache, device=world.device, num_workers=0, progress=False,
                        overrides=[*overrides, "extraction_batch_size=8"])
    r = load_result(path)
    assert r.features["mode"] == "augmented"
    return f"chunks of 8 = one forward of 32 (losses within {gap:.1e}); protocol top1 {r.metrics['top1']:.1f}"


def check_finetune(world: World) -> str:
    from ijepa_eval.protocols import run_finetune
    from ijepa_eval.results import load_result

    path = run_finetune("in1k_1pct_finetune", world.ckpt, root=world.clevr, out_dir=world.tmp / "runs",
                        cache_dir=world.cache, device=world.device, num_workers=0, progress=False,
                        overrides={**FINETUNE, "finetune.micro_batch": 8})
    r = load_result(path)
    loss = r.heads[-1]["scores"]["train"]["loss"]
    assert _finite(loss) and (r.optimizer["micro_batch"], r.optimizer["accum_steps"]) == (8, 2)
    return f"1 epoch, 2 micro-batches of 8 per step, loss {loss:.3f}"


def check_attentive(world: World) -> str:
    """V-JEPA's attentive probe, one epoch on the device vs the CPU from the same initialisation: online (uint8
    batches normalised and randomly erased on the device one batch ahead, the encoder lent there in bf16,
    the probe under float16 autocast with a GradScaler) and on cached patch tokens (a grid of 2 probes, the
    tokens held on the device): train losses within 5%, and each result with its probe file and intervals."""
    import contextlib
    import io

    import numpy as np
    import torch

    from ijepa_eval.protocols.attentive import run_attentive
    from ijepa_eval.results import load_result

    base = ["epochs=1", "batch_size=16", "attentive.base_batch=16"]
    modes = {"online": ["attentive.transforms=vjepa"],  # V-JEPA's AutoAugment, and its erasing on the device
             "cached": ["attentive.tokens=cached", "attentive.lrs=[0.001,0.003]"]}
    gaps = {}
    for mode, extra in modes.items():
        losses = []
        for dev in dict.fromkeys([world.device, torch.device("cpu")]):
            out = world.tmp / f"attentive-{mode}-{dev.type}"
            with contextlib.redirect_stdout(io.StringIO()):  # the token cache's size line: one line per path
                r = load_result(run_attentive("clevr_count_attentive", world.ckpt, root=world.clevr, out_dir=out,
                                              cache_dir=world.cache, work_dir=out / "work", device=dev,
                                              num_workers=0, progress=False, overrides=[*base, *extra]))
            assert (out / r.probe_file["file"]).is_file() and r.ci and r.metrics_ci, f"{mode}: result incomplete"
            losses.append(np.array([h["scores"]["train"]["loss"] for h in r.heads]))
        gap = float(np.max(np.abs(losses[-1] - losses[0]) / losses[-1]))
        assert np.all(np.isfinite(losses[0])) and gap < 0.05, f"{mode}: losses {losses[0]} vs CPU {losses[-1]}"
        gaps[mode] = gap
    return (f"online epoch (uint8 -> device, erasing there) and cached 2-probe grid on {world.device}: train "
            f"losses within {gaps['online']:.1e} / {gaps['cached']:.1e} of the CPU run")


def check_torchrun(world: World) -> str:
    """Probe protocol (each rank's own device), DDP fine-tuning and DDP pretraining in 2 processes."""
    import torch

    if world.device.type == "cuda" and torch.cuda.device_count() < 2:
        raise Skip(f"{torch.cuda.device_count()} GPU visible; the torchrun paths need 2")
    out = world.tmp / "ranks"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", __file__,
           "--ranks", str(world.tmp), "--device", world.device.type]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise AssertionError(f"torchrun exited {done.returncode}: {tail[0]}")
    return (out / "summary.txt").read_text().strip()


def ranks_main(tmp: Path, device: str) -> None:
    """Run by each torchrun process: every rank calls the same entry points, rank 0 writes the summary."""
    import torch.distributed as dist

    from ijepa_eval.devices import process_device
    from ijepa_eval.pretrain import train
    from ijepa_eval.protocols import run_finetune, run_protocol
    from ijepa_eval.results import load_result

    world = World(device, tmp)
    rank, world_size, dev = process_device(None if device == "cuda" else device)
    devices: list = [None] * world_size
    dist.all_gather_object(devices, str(dev))
    assert len(set(devices)) == world_size or dev.type == "cpu", f"ranks share a device: {devices}"
    common = dict(root=world.clevr, out_dir=tmp / "ranks", cache_dir=tmp / "ranks-cache", num_workers=0,
                  progress=False)
    knn = load_result(run_protocol("knn", world.ckpt, overrides={**CLEVR, "dataset.val_split": "val"}, **common))
    ft = load_result(run_finetune("in1k_1pct_finetune", world.ckpt, **common,
                                  overrides={**FINETUNE, "finetune.micro_batch": 4}))
    pre = train(pretrain_config(world, steps=2), tmp / "ranks-pretrain", progress=False)
    assert _finite(pre["last_loss"]) and ft.optimizer["world_size"] == 2 and ft.optimizer["accum_steps"] == 2
    if rank == 0:
        (tmp / "ranks").mkdir(exist_ok=True)
        (tmp / "ranks" / "summary.txt").write_text(
            f"2 processes on {', '.join(devices)}: knn top1 {knn.metrics['top1']:.1f}; DDP fine-tuning 2 x 2 "
            "micro-batches of 4; "
            f"DDP pretraining 2 steps, loss {pre['last_loss']:.3f}\n")


class Skip(Exception):
    """A path this machine cannot exercise (said on its line, not a failure)."""


def _finite(x: float) -> bool:
    return x == x and abs(x) != float("inf")


CHECKS: dict[str, Callable[[World], str]] = {
    "pretrain": check_pretrain, "extraction": check_extraction, "free-memory": check_free_memory,
    "grid": check_grid, "logreg": check_logreg, "knn": check_knn, "aug-paper": check_aug_paper,
    "finetune": check_finetune, "attentive": check_attentive, "torchrun": check_torchrun,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="cuda (default; every path skips without CUDA) or cpu: run the checks on the CPU")
    parser.add_argument("--only", default=",".join(PATHS), help=f"comma-separated subset of {', '.join(PATHS)}")
    parser.add_argument("--ranks", type=Path, help=argparse.SUPPRESS)  # internal: one torchrun process
    args = parser.parse_args(argv)
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the CPU run must not pick up a GPU through a default
    if args.ranks:
        ranks_main(args.ranks, args.device)
        return 0
    import torch

    paths = [p for p in args.only.split(",") if p]
    unknown = sorted(set(paths) - set(PATHS))
    if unknown:
        parser.error(f"unknown path(s) {', '.join(unknown)}; choose from {', '.join(PATHS)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        for path in paths:
            print(f"skip  {path:<12} no CUDA device (torch {torch.__version__}, cuda {torch.version.cuda}); "
                  "run on a GPU machine, or --device cpu to check the script")
        return 0
    failed = 0
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        world = World(args.device, Path(tmp))
        if "pretrain" not in paths:  # every other path reads the tiny checkpoint
            paths = ["pretrain", *paths]
        for path in paths:
            started = time.perf_counter()
            try:
                status, detail = "ok", CHECKS[path](world)
            except Skip as why:
                status, detail = "skip", str(why)
            except Exception as err:  # noqa: BLE001 - one line per path, the next path still runs
                status, detail = "FAIL", f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err) else ''}"
                failed += 1
                if os.environ.get("GPU_CHECK_DEBUG"):
                    traceback.print_exc()
            print(f"{status:<5} {path:<12} {detail} ({time.perf_counter() - started:.1f} s)", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
