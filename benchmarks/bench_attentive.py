"""Cost of a grid of 20 attentive probes vs one probe, per training step, on the same frozen encoder.

One step of the online protocol = the encoder's forward on a device batch (``features.encoding``: bf16 +
channels-last on CUDA) + every probe's V-JEPA update (``AttentiveGrid.train_step``). The forward is shared by the whole
grid, so on a GPU with a large encoder the 20 probes (V-JEPA 2's lr x wd sweep, V-JEPA's depth-1 probe) should
cost little beside it: the goal is grid step ÷ one-probe step ≤ 1.3. Each probe still projects every token to
keys and values (2·N·D² multiply-adds per image, against the encoder's ~12·N·D² per block), so the ratio grows
as the encoder shrinks, and on a few CPU cores, where nothing overlaps, it is larger. Random-init encoders
(no download); synthetic images.

    python benchmarks/bench_attentive.py [--quick] [--device cuda] [--arch vit_huge_patch14_224 --batch 128]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from ijepa_eval.encoders import load_encoder
from ijepa_eval.features import encode, lent_encoder
from ijepa_eval.probes.attentive_grid import AttentiveGrid, AttentiveSpec
from ijepa_eval.threads import fit_threads

GRID_20 = AttentiveSpec(lrs=[5e-4, 1e-3, 1.5e-3, 2e-3], wds=[8e-3, 4e-3, 2e-3, 1e-3, 5e-4])  # V-JEPA 2's sweep
ONE = AttentiveSpec()  # V-JEPA's recipe: lr 1e-3, wd 1e-3


def timed_steps(encoder, spec: AttentiveSpec | None, images, labels, steps: int, device: torch.device) -> float:
    """Seconds per step: encoder forward (+ the grid's updates when ``spec`` is given), after one warm-up step."""
    grid = None if spec is None else AttentiveGrid(spec, encoder.embed_dim, encoder.num_heads, 1000,
                                                    batch_size=len(labels), steps_per_epoch=steps + 1, epochs=1,
                                                    device=device)

    def step():
        tokens = encode(encoder, images, tokens=True, inference=False)
        if grid is not None:
            grid.train_step(tokens, labels)

    step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / steps


def run(quick: bool = False, device: str | None = None, arch: str | None = None, img_size: int | None = None,
        batch: int | None = None, steps: int | None = None) -> dict:
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = dev.type == "cuda"
    threads = fit_threads(0)  # spinning OpenMP threads on busy cores would time the contention, not the grid
    arch = arch or ("vit_huge_patch14_224" if cuda else "vit_tiny_patch16_224" if quick else "vit_small_patch16_224")
    img_size = img_size or (224 if not quick or cuda else 112)
    batch = batch or (128 if cuda else 16)
    steps = steps or (10 if cuda else 3)
    encoder = load_encoder(f"random:{arch}", img_size=img_size)
    g = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, img_size, img_size, generator=g).to(dev)  # already normalised, on the device
    labels = torch.randint(0, 1000, (batch,), generator=g).to(dev)
    with lent_encoder(encoder, dev):
        encoder_s = timed_steps(encoder, None, images, labels, steps, dev)
        one_s = timed_steps(encoder, ONE, images, labels, steps, dev)
        grid_s = timed_steps(encoder, GRID_20, images, labels, steps, dev)
    return {
        "ratio": round(grid_s / one_s, 3),
        "grid_step_s": round(grid_s, 4),
        "one_probe_step_s": round(one_s, 4),
        "encoder_only_step_s": round(encoder_s, 4),
        "probes": len(GRID_20.lrs) * len(GRID_20.wds),
        "device": str(dev),
        "threads": threads,
        "sizes": {"arch": arch, "img_size": img_size, "batch_size": batch, "tokens": encoder.num_patches,
                  "embed_dim": encoder.embed_dim, "steps": steps},
        "goal": "ratio <= 1.3 on GPU (ViT-H/14, batch 128)",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default=None)
    parser.add_argument("--arch", default=None, help="timm ViT name (random init)")
    parser.add_argument("--img-size", type=int, default=None)
    parser.add_argument("--batch", type=int, default=None)
    args = parser.parse_args()
    result = run(args.quick, args.device, args.arch, args.img_size, args.batch)
    print(json.dumps(result, indent=2))
    print(f"20-probe grid step / 1-probe step = {result['ratio']}x on {result['device']} (goal <= 1.3 on GPU)")


if __name__ == "__main__":
    main()
