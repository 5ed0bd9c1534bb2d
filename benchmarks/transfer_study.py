#!/usr/bin/env python
"""When does a teacher teach? 3-layer students with and without a transfer set (docs/transfer_study.md).

Two arms on the default run's design (params.yaml: MiniLM-L6 teachers fine-tuned on 6,000 SST-2 sentences,
3-layer students cut from the pretrained MiniLM-L6, 376 steps on the same 6,000 labelled sentences, one student per
teacher), differing only in `distill.transfer_samples`:

  n0        no transfer set (the default run's students)
  n<N>      N further SST-2 training sentences, labels withheld, that only the teacher labels (the next N rows of
            the fixed shuffle after the teacher's 6,000); 2 epochs over the 6,000 + N rows

Methods NO-KD, KD, PKD, ALP, ALP-scaled. NO-KD has no teacher and ignores a transfer set: the n<N> arm links the n0
arm's NO-KD students. Each arm is an output root linked to one teacher root; `report` computes the library's
intervals of the crossed design (`alpkd.significance.crossed_comparison`) within each arm and across the two.

  python benchmarks/transfer_study.py run --out OUT [--teachers 42 43 44] [--transfer 18000]
  python benchmarks/transfer_study.py report --out OUT [--teachers ...] [--transfer ...] > table.md

`run` is resumable: a (arm, method, seed) whose record exists is skipped.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TASK, DEPTH = "sst2", 3
METHODS = ("nokd", "kd", "pkd", "alp", "alp_scaled")
LINKED = ("data", f"models/{TASK}/teacher", f"cache/{TASK}/teacher", "metrics/teacher", "predictions/teacher-sst2")
NOKD = tuple(f"{kind}/{TASK}-{DEPTH}/nokd" for kind in ("metrics/students", "predictions", "logs", "attention"))


def arm_params(args, transfer: int):
    from alpkd import config

    p = config.load(args.params)
    seeds = list(range(1, len(args.teachers) + 1))  # student k learns from teacher k (Params.teacher_seed)
    methods = list(METHODS) if transfer == 0 else [m for m in METHODS if m != "nokd"] + ["nokd"]
    return p.model_copy(update={
        "teacher": p.teacher.model_copy(update={"seeds": list(args.teachers)}),
        "student": p.student.model_copy(update={"depths": [DEPTH]}),
        "distill": p.distill.model_copy(update={"methods": methods, "seeds": seeds, "transfer_samples": transfer}),
    })


def arms(args) -> dict[str, int]:
    return {"n0": 0, f"n{args.transfer}": args.transfer}


def link(root: Path, target: Path, subs) -> None:
    for sub in subs:
        path = root / sub
        path.parent.mkdir(parents=True, exist_ok=True)
        (target / sub).mkdir(parents=True, exist_ok=True)
        if not path.exists():
            path.symlink_to((target / sub).resolve())


def record(root: Path, method: str, seed: int) -> Path:
    return root / "metrics" / "students" / f"{TASK}-{DEPTH}" / method / f"s{seed}.json"


def run(args) -> None:
    from alpkd import config, numerics

    base = arm_params(args, 0)
    numerics.pin(base.runtime)
    from alpkd import distill, teachers

    out, troot = Path(args.out), Path(args.out) / "teacher"
    for seed in args.teachers:  # every teacher first: the students of all teachers then run method by method
        if not (troot / "metrics" / "teacher" / TASK / f"s{seed}.json").exists():
            start = time.perf_counter()
            teachers.train_teachers(base, TASK, troot, seeds=[seed])
            print(f"teacher {seed}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    for name, n in arms(args).items():
        link(out / name, troot, LINKED)
    link(out / f"n{args.transfer}", out / "n0", NOKD)
    # the positive control first (NO-KD, KD with and without the transfer set), then the layer methods
    x = f"n{args.transfer}"
    order = [("n0", "nokd"), ("n0", "kd"), (x, "kd"), (x, "pkd"), (x, "alp"), ("n0", "pkd"), ("n0", "alp"),
             (x, "alp_scaled"), ("n0", "alp_scaled")]
    groups = {}  # one per arm: each teacher, its cache and its outputs on the transfer rows loaded once
    for name, method in order:
        p = arm_params(args, arms(args)[name])
        group = groups.setdefault(name, distill.Group(p, TASK, DEPTH, out / name))
        for seed in p.distill.seeds:
            if record(out / name, method, seed).exists():
                continue
            start = time.perf_counter()
            distill.distill_group(p, TASK, DEPTH, out / name, methods=[method], seeds=[seed], group=group)
            print(f"{name} {method} s{seed}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)


def _preds(root: Path, method: str, seeds) -> tuple[np.ndarray, np.ndarray]:
    files = [json.loads((root / "predictions" / f"{TASK}-{DEPTH}" / method / f"s{s}.json").read_text())["validation"]
             for s in seeds]
    return np.asarray(files[0]["labels"]), np.asarray([f["predictions"] for f in files])


def report(args) -> None:
    import pandas as pd

    from alpkd import config, numerics

    numerics.pin(arm_params(args, 0).runtime)
    from alpkd.significance import adjust, crossed_comparison, gap_table, mean_squares

    out = Path(args.out)
    names = list(arms(args))
    seeds = arm_params(args, 0).distill.seeds
    teachers = [json.loads((out / "teacher" / "metrics" / "teacher" / TASK / f"s{t}.json").read_text())
                for t in args.teachers]
    teacher = 100 * np.mean([t["score"] for t in teachers])
    # the cells whose students all finished (a study cut short reports what it has)
    recs = {(name, m): [json.loads(record(out / name, m, s).read_text()) for s in seeds]
            for name in names for m in METHODS if all(record(out / name, m, s).exists() for s in seeds)}

    rows = []
    for name in names:
        nokd = 100 * np.mean([r["score"] for r in recs[(name, "nokd")]])
        for m in (m for m in METHODS if (name, m) in recs):
            scores = [100 * r["score"] for r in recs[(name, m)]]
            rows.append({"arm": name, "method": m, "mean": round(np.mean(scores), 2), "std": round(np.std(scores, ddof=1), 2),
                         "share of room": round((np.mean(scores) - nokd) / (teacher - nokd), 2) if m != "nokd" else None,
                         "steps": recs[(name, m)][0]["train_steps"],
                         "train s per student": round(np.mean([r["train_time_s"] for r in recs[(name, m)]]), 0)})
    within = (("kd", "nokd"), ("pkd", "nokd"), ("alp", "nokd"), ("alp_scaled", "nokd"), ("pkd", "kd"), ("alp", "pkd"),
              ("alp", "kd"), ("alp_scaled", "alp"))
    wanted = [(arm, arm, a, b) for arm in names for a, b in within]
    wanted += [(names[1], names[0], m, m) for m in METHODS if m != "nokd"]  # what the transfer set adds
    gaps = []
    for arm_a, arm_b, ma, mb in (w for w in wanted if (w[0], w[2]) in recs and (w[1], w[3]) in recs):
        labels, a = _preds(out / arm_a, ma, seeds)
        _, b = _preds(out / arm_b, mb, seeds)
        item = {"metric": "accuracy", "labels": labels, "a": a, "b": b, "teachers": list(args.teachers)}
        c = crossed_comparison([item])
        ms = mean_squares(gap_table(item))
        (mt, _), (mj, _), (mtj, _) = ms["teacher"], ms["sentence"], ms["teacher x sentence"]
        # the variance of the mean gap from its components, each over the same T n N: teachers (with their one
        # student each) mt - mtj, sentences mj - mtj, their interaction mtj; a negative estimate counts as 0
        parts = [max(mt - mtj, 0.0), max(mj - mtj, 0.0), mtj]
        total = sum(parts)
        gaps.append({"comparison": f"{ma}@{arm_a} - {mb}@{arm_b}", "gap": round(100 * c.gap, 2),
                     "low": round(100 * c.low, 2), "high": round(100 * c.high, 2), "p": c.p_value, "df": round(c.df, 1),
                     **{f"from {k}": round(v / total, 2) if total > 0 else None for k, v in
                        zip(("teachers", "sentences", "teacher x sentence"), parts)}})
    g = pd.DataFrame(gaps)
    g["p (BH)"] = adjust(g["p"].to_numpy()).round(3)
    g["p"] = g["p"].round(3)
    s = pd.DataFrame(rows)
    s.to_csv(out / "scores.csv", index=False)
    g.to_csv(out / "gaps.csv", index=False)
    each = ", ".join(f"{100 * t['score']:.2f}" for t in teachers)
    print(f"teachers {list(args.teachers)}: mean {teacher:.2f} (each: {each}); trivial "
          f"{100 * teachers[0]['trivial']['accuracy']:.2f}\n")
    print(s.to_markdown(index=False))
    print()
    print(g.to_markdown(index=False))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["run", "report"])
    ap.add_argument("--out", required=True, help="the teacher root and the arms' output roots go here")
    ap.add_argument("--params", default="params.yaml", help="the design's params file (default: the default run's)")
    ap.add_argument("--teachers", type=int, nargs="+", default=[42, 43, 44])
    ap.add_argument("--transfer", type=int, default=18000, help="N of the transfer arm (default: 3 x 6,000)")
    a = ap.parse_args()
    run(a) if a.command == "run" else report(a)
