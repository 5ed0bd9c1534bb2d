#!/usr/bin/env python
"""How long must a student train before its score stops moving? Learning curves of the default task.

One saved teacher (and its cache) under `--base`, students of each depth, method, epoch count, learning rate
and seed distilled from it; one row per student appended to `--csv` as it finishes (a killed study keeps what
it has). Each configuration is a separate run with its own linear-decay schedule, so a point is what a run of
that length gives, not a checkpoint of a longer one.

  python -m alpkd --params P --out BASE data --task sst2
  python -m alpkd --params P --out BASE teacher --task sst2
  python benchmarks/schedule_study.py --params P --base BASE --csv study.csv --part 1/2   # and --part 2/2
  python benchmarks/schedule_study.py --table study.csv                                    # the Markdown table

Two parts on a 2-core machine, each with one thread (`OMP_NUM_THREADS=1`), share the cores evenly.
"""
from __future__ import annotations

import argparse
import csv
import itertools
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GRID = {  # (depth, method, epochs, learning rate, seed)
    "depth": [3, 1],
    "method": ["nokd", "kd"],
    "epochs": [1, 2, 4],
    "learning_rate": [2.0e-4],
    "seed": [1, 2],
}
EXTRA = [(3, m, 2, 1.0e-4, 1) for m in ("nokd", "kd")]  # a lower learning rate at one length
FIELDS = ["task", "depth", "method", "epochs", "learning_rate", "seed", "train_examples", "steps", "score",
          "train_time_s", "threads", "isa"]


def configurations() -> list[tuple]:
    return [*itertools.product(*GRID.values()), *EXTRA]


def run(args) -> None:
    from alpkd import config, distill

    params = config.load(args.params)
    task = params.data.tasks[0]
    base = Path(args.base).resolve()
    k, n = (int(x) for x in args.part.split("/"))
    todo = [c for i, c in enumerate(configurations()) if i % n == k - 1]
    done = set()
    if Path(args.csv).exists():
        with open(args.csv) as f:
            done = {(int(r["depth"]), r["method"], float(r["epochs"]), float(r["learning_rate"]), int(r["seed"]))
                    for r in csv.DictReader(f)}
    for depth, method, epochs, lr, seed in todo:
        if (depth, method, float(epochs), float(lr), seed) in done:
            continue
        root = base.parent / "runs" / f"e{epochs}-lr{lr:g}"
        for sub in ("data", "cache", "models/" + task + "/teacher"):  # the shared teacher, data and cache
            link = root / sub
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists():
                link.symlink_to(base / sub)
        dp = params.distill.model_copy(update={"epochs": float(epochs), "learning_rate": lr})
        p = params.model_copy(update={"distill": dp, "student": params.student.model_copy(update={"depths": [depth]})})
        start = time.perf_counter()
        rec = distill.distill_group(p, task, depth, root, methods=[method], seeds=[seed])[method][0]
        import torch

        row = {"task": task, "depth": depth, "method": method, "epochs": epochs, "learning_rate": lr, "seed": seed,
               "train_examples": rec["train_examples"], "steps": rec["train_steps"], "score": rec["score"],
               "train_time_s": round(time.perf_counter() - start, 1), "threads": torch.get_num_threads(),
               "isa": torch.backends.cpu.get_cpu_capability()}
        new = not Path(args.csv).exists()
        with open(args.csv, "a", newline="") as f:
            w = csv.DictWriter(f, FIELDS)
            if new:
                w.writeheader()
            w.writerow(row)
        print(row, file=sys.stderr, flush=True)


def table(path: str) -> str:
    import pandas as pd

    df = pd.read_csv(path)
    df["score100"] = 100 * df["score"]
    g = df.groupby(["depth", "method", "learning_rate", "epochs", "steps"]).agg(
        mean=("score100", "mean"), low=("score100", "min"), high=("score100", "max"), seeds=("seed", "size"),
        time=("train_time_s", "mean")).reset_index()
    g = g.sort_values(["depth", "method", "learning_rate", "epochs"], ascending=[False, True, False, True])
    lines = ["| layers | method | lr | epochs | steps | score (mean of seeds) | seeds (min, max) | n | s per run |",
             "|---:|---|---:|---:|---:|---:|---|---:|---:|"]
    for r in g.itertuples():
        lines.append(f"| {r.depth} | {r.method} | {r.learning_rate:g} | {r.epochs:g} | {r.steps} | {r.mean:.1f} | "
                     f"{r.low:.1f}, {r.high:.1f} | {r.seeds} | {r.time:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params")
    ap.add_argument("--base", help="output root holding data/, models/<task>/teacher and cache/")
    ap.add_argument("--csv", help="rows are appended here; finished configurations are skipped")
    ap.add_argument("--part", default="1/1", help="k/N: run every N-th configuration, from the k-th")
    ap.add_argument("--table", help="print the Markdown table of a finished CSV and exit")
    a = ap.parse_args()
    if a.table:
        print(table(a.table))
    else:
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        run(a)
