"""Cost of the paper's 16-head linear grid vs a single head, on the same cached (synthetic) features.

Heads sharing an input share one matmul and one vectorised optimizer step, so the grid should cost far
less than 16 single-head runs; the goal is grid time ÷ one-head time ≤ 1.5. The one head is the largest
(concatPOOL4, BN+linear). ``sequential_ratio`` estimates 16 one-by-one runs from one timed head per input
group. Matmul FLOPs still grow with the number of heads, so the ratio is best where a step is bound by
memory traffic and launches (GPU, moderate class counts) and worst on a few CPU cores.

    python benchmarks/bench_probes.py [--quick] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from ijepa_eval.probes import LinearTrainConfig, OptimizerConfig, ScheduleConfig, fit_linear_grid, head_grid


def make_features(n: int, dim: int, classes: int, seed: int = 0) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=g)
    centers = torch.randn(classes, 4 * dim, generator=g)
    concat = centers[labels] + 2 * torch.randn(n, 4 * dim, generator=g)
    return {"lastPOOL": concat[:, -dim:], "concatPOOL4": concat}, labels


def timed_fit(features, labels, specs, cfg, classes, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fit_linear_grid(features, labels, specs, cfg, classes, device=device, progress=False)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def run(quick: bool = False, device: str | None = None) -> dict:
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    n, dim, classes, epochs = (4096, 192, 100, 2) if quick else (32768, 384, 100, 3)
    features, labels = make_features(n, dim, classes)
    cfg = LinearTrainConfig(OptimizerConfig("sgd", base_lr=0.01, nesterov=True), ScheduleConfig("step", [2]),
                            epochs=epochs, batch_size=256)
    grid = head_grid(["lastPOOL", "concatPOOL4"], ["bn_linear", "linear"], [1.0, 0.1], [5e-4, 0.0])
    one = [s for s in grid if s.representation == "concatPOOL4" and s.head == "bn_linear"][:1]
    timed_fit(features, labels, one, cfg, classes, dev)  # warm-up (allocator, kernels, threads)
    t_one = min(timed_fit(features, labels, one, cfg, classes, dev) for _ in range(2))
    t_grid = min(timed_fit(features, labels, grid, cfg, classes, dev) for _ in range(2))
    per_group = {}
    for spec in grid:
        key = (spec.representation, spec.head)
        if key not in per_group:
            per_group[key] = timed_fit(features, labels, [spec], cfg, classes, dev)
    sequential = sum(per_group[(s.representation, s.head)] for s in grid)
    return {
        "ratio": round(t_grid / t_one, 3),
        "sequential_ratio": round(sequential / t_one, 3),
        "speedup_vs_sequential": round(sequential / t_grid, 3),
        "grid_s": round(t_grid, 4),
        "one_head_s": round(t_one, 4),
        "heads": len(grid),
        "device": str(dev),
        "sizes": {"n": n, "dim": dim, "concat_dim": 4 * dim, "classes": classes, "epochs": epochs, "batch_size": 256},
        "goal": "ratio <= 1.5",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    result = run(args.quick, args.device)
    print(json.dumps(result, indent=2))
    print(f"16-head grid / 1 head = {result['ratio']}x (goal <= 1.5); "
          f"16 heads one by one would be {result['sequential_ratio']}x")


if __name__ == "__main__":
    main()
