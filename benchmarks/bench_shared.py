"""A run beside one other busy torch process: how much slower than alone (issue 11, goal ≤ 2.5×).

The measured job is a child process taking tiny_cpu I-JEPA pretraining steps (the part of `make demo` that
slowed from a fraction of a second to ~3 s per step beside another job) with its threads sized by
``ijepa_eval.threads.fit_threads``; torch's default sizing (one thread per core, whatever else runs) is
measured the same way for comparison. The neighbour is a second child running large float32 matmuls with
torch's default threads. Each ratio compares two runs made minutes apart on the same machine, so it
holds on a noisy shared machine better than any absolute time.

    python benchmarks/bench_shared.py            # ~1-2 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

# The measured job: bench_pretrain's timed tiny_cpu steps (no data loading), threads set by the policy.
STEP_JOB = r"""
import json, sys
sys.path.insert(0, sys.argv[2])
if sys.argv[1] == "fit":
    from ijepa_eval.threads import fit_threads
    fit_threads(0)
import bench_pretrain
print(json.dumps(bench_pretrain.run(quick=sys.argv[3] == "quick")))
"""

BUSY_JOB = r"""
import torch
a = torch.randn(1024, 1024)
while True:
    a = torch.tanh(a @ a)
"""


def _child(code: str, *args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    return subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True, env=env)


def time_steps(policy: str, quick: bool) -> dict:
    here = os.path.dirname(os.path.abspath(__file__))
    out, _ = _child(STEP_JOB, policy, here, "quick" if quick else "full").communicate(timeout=900)
    return json.loads(out)


def run(quick: bool = False) -> dict:
    result: dict = {"loadavg_before": os.getloadavg()[0]}
    for policy in ("fit", "torch_default"):
        alone = time_steps(policy, quick)
        busy = _child(BUSY_JOB)
        try:
            time.sleep(2)  # let the neighbour's threads start
            shared = time_steps(policy, quick)
        finally:
            busy.kill()
            busy.wait()
        result[policy] = {"alone_step_ms": alone["step_ms"], "shared_step_ms": shared["step_ms"],
                          "threads_alone": alone["threads"], "threads_shared": shared["threads"],
                          "slowdown": round(shared["step_ms"] / alone["step_ms"], 2)}
    result["ratio"] = result["fit"]["slowdown"]  # goal ≤ 2.5
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    print(json.dumps(run(**vars(parser.parse_args())), indent=2))
