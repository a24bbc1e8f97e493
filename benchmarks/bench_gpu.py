"""`make bench-gpu`: the CUDA paths' speed (`make bench-gpu` runs `benchmarks/gpu_check.py` first, about a
minute, so a broken path stops it before these; both together ≤ 8 minutes on one H100/H200).

1. feature extraction, ViT-H/14 bf16 on synthetic tensors: images/s through `get_features` vs a bare
   encoder loop, and the forward pass's model FLOPs utilisation (MFU);
1b. the loader (issue 23): the `gpu` decode backend's img/s (nvJPEG + device resize), and ViT-H/14
   extraction from generated ImageNet-like JPEGs with 12 workers per backend (pil, tensor, gpu) vs the
   bare forward (goal ≥ 0.8×);
2. the paper's 16-head linear grid on a 1.28 M × 5120 synthetic feature matrix (ImageNet-1k train,
   concatPOOL4 of a ViT-H) for one epoch of the in1k_linear recipe (LARS, batch 16384): seconds per epoch
   and the projected 50-epoch time;
3. a ViT-H/14 I-JEPA pretraining step, batch 128, bf16: images/s and MFU;
4. the online attentive protocol's step on a ViT-H/14, batch 128: 20 probes (V-JEPA 2's lr x wd grid) ÷ one
   probe on the same encoder forward (goal ≤ 1.3).

Prints a summary and writes JSON. ``--dry-run`` runs the same code on tiny sizes (CPU is fine), to check
the script before spending GPU time.

    python benchmarks/bench_gpu.py --out results/bench-gpu.json
    python benchmarks/bench_gpu.py --dry-run
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def extraction(dry: bool) -> dict:
    bench_extraction, bench_pretrain = load_script("bench_extraction"), load_script("bench_pretrain")
    arch, img, n, batch = ("vit_tiny_patch16_224", 64, 64, 16) if dry else ("vit_huge_patch14_224", 224, 4096, 256)
    result = bench_extraction.run(arch=arch, img_size=img, n=n, batch_size=batch, workers=0 if dry else 8,
                                  repeats=1 if dry else 2)
    from ijepa_eval.encoders import load_encoder

    vit = load_encoder(f"random:{arch}", img_size=img).vit
    tokens = vit.patch_embed.num_patches + vit.num_prefix_tokens
    dim, ratio = vit.embed_dim, vit.blocks[0].mlp.fc1.out_features / vit.embed_dim
    flops_per_image = len(vit.blocks) * bench_pretrain.block_flops(tokens, dim, ratio)
    peak = bench_pretrain.peak_tflops(torch.device(result["device"]))
    achieved = flops_per_image * result["bare_loop_images_per_s"] / 1e12
    result.update(forward_tflops=round(achieved, 1), mfu=round(achieved / peak, 3) if peak else None)
    return result


def loader(dry: bool) -> dict:
    """Decoding at the GPU's pace (issue 23): the ``gpu`` backend (nvJPEG batches + device resize) alone, and
    ViT-H/14 bf16 extraction through get_features with 12 workers per backend against the bare forward on
    pre-made tensors (goal ≥ 0.8×), on generated ImageNet-like JPEGs."""
    import tempfile

    from torch.utils.data import DataLoader

    from ijepa_eval.data import eval_transform, get_dataset
    from ijepa_eval.data.device import DevicePreprocess, collate_uint8
    from ijepa_eval.data.synthetic import write_imagenet_like
    from ijepa_eval.encoders import load_encoder
    from ijepa_eval.features import get_features

    bench_extraction = load_script("bench_extraction")
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    arch, img, per_class, batch, workers = (("vit_tiny_patch16_224", 64, 4, 16, 2) if dry
                                            else ("vit_huge_patch14_224", 224, 128, 256, 12))
    result: dict = {"device": str(dev), "arch": arch, "workers": workers, "batch_size": batch}
    with tempfile.TemporaryDirectory(prefix="bench-gpu-loader-") as tmp:
        root = write_imagenet_like(Path(tmp) / "jpegs", n_classes=16, n_train_per_class=per_class, n_val_per_class=0)
        ds = get_dataset("folder", root, "train", decode="gpu")
        prep = DevicePreprocess(dev, transform=eval_transform("imagenet", img, normalize=False))
        loader_ = DataLoader(ds, batch_size=batch, num_workers=workers, collate_fn=collate_uint8, pin_memory=dev.type == "cuda")
        seen, start = 0, None
        for images, _ in loader_:
            x = prep(images)
            if start is None:  # the first batch pays for the workers and nvJPEG's set-up
                torch.cuda.synchronize() if dev.type == "cuda" else None
                start = time.perf_counter()
                continue
            seen += len(x)
        torch.cuda.synchronize() if dev.type == "cuda" else None
        result["gpu_backend_images_per_s"] = round(seen / (time.perf_counter() - start), 1)

        encoder = load_encoder(f"random:{arch}", img_size=img).to(dev)
        premade = torch.randn(len(ds), 3, img, img)
        bench_extraction.bare_loop(encoder, premade[:batch], batch, dev, 4)  # warm-up
        bare = len(premade) / bench_extraction.bare_loop(encoder, premade, batch, dev, 4)
        result["bare_forward_images_per_s"] = round(bare, 1)
        for backend in ("pil", "tensor", "gpu"):
            fs = get_features(encoder, get_dataset("folder", root, "train"), cache_dir=Path(tmp) / f"cache-{backend}",
                              batch_size=batch, num_workers=workers, device=dev, progress=False, decode=backend)
            rate = fs.meta["timings"]["loop_images_per_s"]
            result[f"get_features_{backend}"] = {"images_per_s": rate, "vs_bare": round(rate / bare, 3),
                                                 "loader_wait_fraction": fs.meta["timings"]["loader_wait_fraction"]}
    result["n"] = len(ds)
    return result


def probe_grid(dry: bool) -> dict:
    from ijepa_eval.probes import LinearTrainConfig, OptimizerConfig, ScheduleConfig, head_grid

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    n, dim, classes, batch = (4096, 64, 10, 512) if dry else (1_281_167, 1280, 1000, 16384)
    g = torch.Generator(dev).manual_seed(0)
    labels = torch.randint(0, classes, (n,), generator=g, device=dev)
    concat = torch.randn(classes, 4 * dim, generator=g, device=dev)[labels]  # 26 GB float32 on the GPU
    for start in range(0, n, 65536):  # noise in chunks: a full-size randn would double the peak
        rows = concat[start:start + 65536]
        rows.add_(torch.randn(rows.shape, generator=g, device=dev), alpha=2.0)
    features = {"lastPOOL": concat[:, -dim:], "concatPOOL4": concat}
    cfg = LinearTrainConfig(OptimizerConfig("lars", base_lr=0.1, momentum=0.9), ScheduleConfig("step", [15, 30, 45]),
                            epochs=1, batch_size=batch)
    grid = head_grid(["lastPOOL", "concatPOOL4"], ["bn_linear", "linear"], [1.0, 0.1], [5e-4, 0.0])
    epoch_s = load_script("bench_probes").timed_fit(features, labels, grid, cfg, classes, dev)
    return {"epoch_s": round(epoch_s, 2), "projected_50_epochs_min": round(50 * epoch_s / 60, 1), "heads": len(grid),
            "n": n, "features": 4 * dim, "classes": classes, "batch_size": batch, "device": str(dev)}


def pretraining(dry: bool) -> dict:
    bench_pretrain = load_script("bench_pretrain")
    cuda = torch.cuda.is_available()
    return bench_pretrain.run(quick=dry, device="cuda" if cuda else "cpu", arch="tiny_cpu" if dry else "vith14_in1k")


def attentive(dry: bool) -> dict:
    return load_script("bench_attentive").run(quick=dry)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None,
                        help="JSON path (default results/bench-gpu.json; results/bench-gpu-dry.json with --dry-run)")
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes, any device: checks the script")
    parser.add_argument("--only", default="extraction,loader,probe_grid,pretraining,attentive")
    args = parser.parse_args()
    if not args.dry_run and not torch.cuda.is_available():
        print("bench-gpu: error: no CUDA device; run it on a GPU machine, or use --dry-run", file=sys.stderr)
        return 2

    from ijepa_eval.env import environment
    from ijepa_eval.io import atomic_write_json

    report = {"env": environment(), "dry_run": args.dry_run, "benchmarks": {}}
    for name in args.only.split(","):
        start = time.perf_counter()
        print(f"== {name}", flush=True)
        jobs = {"extraction": extraction, "loader": loader, "probe_grid": probe_grid, "pretraining": pretraining,
                "attentive": attentive}
        result = jobs[name](args.dry_run)
        result["wall_s"] = round(time.perf_counter() - start, 1)
        report["benchmarks"][name] = result
        print(result, flush=True)
        if torch.cuda.is_available():
            result["max_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 1)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
    b = report["benchmarks"]
    print("\nsummary:")
    if "extraction" in b:
        e = b["extraction"]
        print(f"  extraction  {e['get_features_images_per_s']} img/s via get_features, {e['ratio']}× the bare loop "
              f"(goal ≥ 0.8), forward MFU {e['mfu']}")
    if "loader" in b:
        d = b["loader"]
        print(f"  loader      gpu backend {d['gpu_backend_images_per_s']} img/s; {d['arch']} extraction with "
              f"{d['workers']} workers vs bare forward {d['bare_forward_images_per_s']} img/s (goal ≥ 0.8): "
              + ", ".join(f"{k} {d[f'get_features_{k}']['vs_bare']}" for k in ("pil", "tensor", "gpu")))
    if "probe_grid" in b:
        p = b["probe_grid"]
        print(f"  probe grid  {p['heads']} heads on {p['n']}×{p['features']}: {p['epoch_s']} s/epoch, "
              f"~{p['projected_50_epochs_min']} min for 50 epochs")
    if "pretraining" in b:
        t = b["pretraining"]
        print(f"  pretraining {t.get('images_per_s')} img/s, MFU {t.get('mfu')} (goal ≥ 0.40 for ViT-H/14 bf16)")
    if "attentive" in b:
        a = b["attentive"]
        print(f"  attentive   {a['probes']} probes ÷ 1 probe per step on {a['sizes']['arch']}: {a['ratio']}× "
              f"(goal ≤ 1.3); {a['grid_step_s']} s vs {a['one_probe_step_s']} s, encoder alone {a['encoder_only_step_s']} s")
    out = args.out or ("results/bench-gpu-dry.json" if args.dry_run else "results/bench-gpu.json")
    atomic_write_json(out, report)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
