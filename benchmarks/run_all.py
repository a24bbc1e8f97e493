"""`make bench`: every benchmark script in one run, printing ratios and writing results/bench.json.

Each script exposes `run(quick: bool = False) -> dict` whose `ratio` entry compares ours with a baseline
measured in the same process, on the same machine, minutes apart — absolute times here are noisy.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = {
    "loader": ("bench_loader.py", "tensor-path eval pipeline img/s ÷ PIL decode-only img/s, per core (goal ≥ 0.5)"),
    "extraction": ("bench_extraction.py", "get_features images/s ÷ bare encoder loop images/s (goal ≥ 0.8)"),
    "probe_grid": ("bench_probes.py", "16-head grid time ÷ 1-head time (goal ≤ 1.5)"),
    "attentive_grid": ("bench_attentive.py", "20-probe attentive grid step ÷ 1-probe step, same encoder "
                                             "(goal ≤ 1.3 on GPU; CPU figure reported)"),
    "pretrain": ("bench_pretrain.py", "tiny_cpu pretraining images/s"),
    "shared": ("bench_shared.py", "pretraining step time beside one busy torch process ÷ alone (goal ≤ 2.5)"),
}


def load_script(filename: str):
    spec = importlib.util.spec_from_file_location(filename.removesuffix(".py"), HERE / filename)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="results/bench.json", help="where to write the JSON summary")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument("--only", default=None, help=f"comma-separated subset of {','.join(BENCHES)}")
    args = parser.parse_args()

    from ijepa_eval.env import environment
    from ijepa_eval.io import atomic_write_json

    names = args.only.split(",") if args.only else list(BENCHES)
    report = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "env": environment(),
              "benchmarks": {}}
    for name in names:
        filename, meaning = BENCHES[name]
        print(f"== {name}: {meaning}", flush=True)
        start = time.perf_counter()
        result = load_script(filename).run(quick=args.quick)
        result["wall_s"] = round(time.perf_counter() - start, 2)
        report["benchmarks"][name] = result
        print(json.dumps(result, indent=2), flush=True)
    print("\nsummary:")
    for name, result in report["benchmarks"].items():
        key = "ratio" if "ratio" in result else next(iter(result))
        print(f"  {name:<12} {key} = {result[key]}   ({BENCHES[name][1]})")
    atomic_write_json(args.out, report)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
