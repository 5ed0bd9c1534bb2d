#!/usr/bin/env python
"""Why does distillation gain nothing in the default run? Where a student starts x how much its teacher knows.

Four arms, each a full set of students distilled from one teacher (docs/kd_study.md):

  init_from   teacher      a student is cut from the fine-tuned teacher (embeddings, pooler, classifier, layers)
              pretrained   the same layers from the checkpoint the teacher was fine-tuned from, a fresh classifier
  teacher     6k           the teacher learnt from the students' 6,000 sentences (the old default)
              20k          from 20,000 sentences (the students' 6,000 among them), 2 epochs

Every arm's students learn from the same 6,000 sentences with the default schedule. Each arm is an output root of
its own (`<out>/<arm>/`) linked to its teacher's root (data, teacher model, cache, teacher metrics), so the
library's own report (`alpkd.report.write_report`: table, paired bootstrap, attention) runs on each arm.

  python -m alpkd --params P6 --out ROOT6 data --task sst2 && python -m alpkd ... teacher --task sst2 --seed 42
  python benchmarks/kd_study.py run --out OUT --teacher 6k=P6:ROOT6 --teacher 20k=P20:ROOT20 &   # two workers
  python benchmarks/kd_study.py run --out OUT --teacher 6k=P6:ROOT6 --teacher 20k=P20:ROOT20 &
  python benchmarks/kd_study.py report --out OUT --teacher 6k=P6:ROOT6 --teacher 20k=P20:ROOT20 > table.md

Two workers on a 2-core machine, each with one thread (`runtime.threads: 1`), share the cores and the units.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

INITS = ("teacher", "pretrained")
CELLS = [(3, m) for m in ("nokd", "kd", "pkd", "alp", "alp_scaled")] + \
        [(1, m) for m in ("nokd", "kd", "alp", "alp_scaled")]  # at one layer PKD is KD (the last layer excluded)
SEEDS = [1, 2]
LINKED = ("data", "models/{task}/teacher", "cache/{task}/teacher", "metrics/teacher")


def arm_params(params_file: str, init_from: str, threads: int):
    from alpkd import config

    p = config.load(params_file)
    methods = sorted({m for _, m in CELLS}, key=[m for _, m in CELLS].index)
    return p.model_copy(update={
        "student": p.student.model_copy(update={"init_from": init_from, "depths": sorted({d for d, _ in CELLS},
                                                                                          reverse=True)}),
        "distill": p.distill.model_copy(update={"methods": methods, "seeds": SEEDS}),
        "runtime": p.runtime.model_copy(update={"threads": threads}),
    })


def arms(teachers: dict[str, tuple[str, str]]) -> list[tuple[str, str, str, str]]:
    """(arm name, init_from, params file, teacher root) of every arm."""
    return [(f"{init}-{size}", init, pfile, root) for size, (pfile, root) in teachers.items() for init in INITS]


def link_arm(arm_root: Path, teacher_root: Path, task: str) -> None:
    for sub in LINKED:
        link = arm_root / sub.format(task=task)
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to((teacher_root / sub.format(task=task)).resolve())


PRIORITY = [  # (depth, methods, arms): what answers the question first. The pretrained-6k arm's NO-KD, KD, PKD and
    # ALP are also the default run's design (3 teachers, 6 students), and teacher-6k's the previous default run's
    # (committed, docs/history): the study adds the 20k arms and ALP-scaled, and runs their cells last
    (3, ("nokd", "kd"), ("pretrained-6k", "teacher-20k", "pretrained-20k")),
    (3, ("alp", "pkd"), ("teacher-20k", "pretrained-20k")),
    (3, ("alp_scaled",), ("pretrained-6k", "teacher-6k", "teacher-20k", "pretrained-20k")),
    (1, ("nokd", "kd"), ("teacher-20k", "pretrained-20k")),
    (1, ("alp", "alp_scaled"), ("teacher-20k", "pretrained-20k", "pretrained-6k", "teacher-6k")),
    (3, ("alp", "pkd"), ("pretrained-6k",)),
    (1, ("nokd", "kd"), ("pretrained-6k",)),
    (3, ("nokd", "kd", "pkd", "alp"), ("teacher-6k",)),
    (1, ("nokd", "kd"), ("teacher-6k",)),
]


def units(teachers) -> list[tuple]:
    by_name = {a[0]: a for a in arms(teachers)}
    out = [(by_name[a], d, m) for d, methods, names in PRIORITY for a in names for m in methods if a in by_name]
    assert sorted((a[0], d, m) for a, d, m in out) == sorted((a, d, m) for a in by_name for d, m in CELLS)
    return out


def run(args, teachers) -> None:
    """Work through the units in `PRIORITY` order; several workers share them (a unit is claimed by creating its
    claim file), and a unit whose teacher is still training is passed over until it is ready."""
    from alpkd import config, numerics

    numerics.pin(config.load(teachers[next(iter(teachers))][0]).runtime.model_copy(update={"threads": args.threads}))
    from alpkd import distill

    claims = Path(args.out) / "claims"
    claims.mkdir(parents=True, exist_ok=True)
    if args.reclaim:  # after every worker stopped: a claimed unit without all its records is run again (resumed)
        for (name, _, pfile, _), depth, method in units(teachers):
            task = config.load(pfile).data.tasks[0]
            records = [Path(args.out) / name / "metrics" / "students" / f"{task}-{depth}" / method / f"s{s}.json"
                       for s in SEEDS]
            if not all(r.exists() for r in records):
                (claims / f"{name}-{depth}-{method}").unlink(missing_ok=True)
    while True:
        pending = False
        for (name, init, pfile, troot), depth, method in units(teachers):
            claim = claims / f"{name}-{depth}-{method}"
            if claim.exists():
                continue
            pending = True
            p = arm_params(pfile, init, args.threads)
            task = p.data.tasks[0]
            if not (Path(troot) / "metrics" / "teacher" / task / "s42.json").exists():  # its teacher still training
                continue
            try:
                os.close(os.open(claim, os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                continue
            root = Path(args.out) / name
            link_arm(root, Path(troot), task)
            start = time.perf_counter()
            distill.distill_group(p, task, depth, root, methods=[method], seeds=SEEDS)
            print(f"{name} {depth} {method}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
            break
        else:
            if not pending:
                return
            time.sleep(30)


def _attention(root: Path, task: str, depth: int, method: str) -> dict | None:
    """Mean over seeds of ALP's attention at step 0 and at the end: the largest weight of each student layer
    and the teacher layer (1-based) it falls on."""
    import numpy as np

    first, last = [], []
    for s in SEEDS:
        f = root / "attention" / f"{task}-{depth}" / method / f"s{s}.json"
        if not f.exists():
            return None
        h = json.loads(f.read_text())["history"]
        first.append(np.asarray(h[0]["weights"]))
        last.append(np.asarray(h[-1]["weights"]))
    f0, f1 = np.mean(first, 0), np.mean(last, 0)
    fmt = lambda w: ", ".join(f"{w[i].max():.2f}@{w[i].argmax() + 1}" for i in range(len(w)))  # noqa: E731
    return {"step0": fmt(f0), "end": fmt(f1), "step0_weights": f0.round(3).tolist(), "end_weights": f1.round(3).tolist()}


def report(args, teachers) -> None:
    import pandas as pd

    from alpkd import config, numerics, report as rep

    numerics.pin(config.load(teachers[next(iter(teachers))][0]).runtime.model_copy(update={"threads": args.threads}))
    rows, att_rows, gaps = [], [], []
    wanted = [("kd", "nokd"), ("pkd", "kd"), ("alp", "pkd"), ("alp", "kd"), ("alp_scaled", "alp")]
    for name, init, pfile, troot in arms(teachers):
        p = arm_params(pfile, init, args.threads)
        task, root = p.data.tasks[0], Path(args.out) / name
        rep.write_report(p, root)
        res = pd.read_csv(root / "report" / "results.csv")
        sig = pd.read_csv(root / "report" / "significance.csv")
        teacher = json.loads((Path(troot) / "metrics" / "teacher" / task / "s42.json").read_text())
        for depth in sorted({d for d, _ in CELLS}, reverse=True):
            cell = res[(res["layers"].astype(str) == str(depth)) & (res["task"] == task)]
            score = {r.method: r.mean for r in cell.itertuples()}
            row = {"arm": name, "init_from": init, "teacher examples": p.data.max_train_samples,
                   "teacher": round(100 * teacher["score"], 1), "layers": depth,
                   **{m: round(score[m], 1) for m in ("nokd", "kd", "pkd", "alp", "alp_scaled") if m in score}}
            row["room"] = round(row["teacher"] - row["nokd"], 1) if "nokd" in row else None  # a cell not run
            for a, b in wanted:
                g = sig[(sig["layers"] == depth) & (sig["method"] == a) & (sig["baseline"] == (b if not (
                    depth == 1 and b == "pkd") else "kd"))]
                if len(g):
                    r = g.iloc[0]
                    gaps.append({"arm": name, "layers": depth, "comparison": f"{a} - {b}", "gap": round(r.gap, 1),
                                 "low": round(r.low, 1), "high": round(r.high, 1), "p": round(r.p_value, 3)})
            rows.append(row)
            for m in ("alp", "alp_scaled"):
                a = _attention(root, task, depth, m)
                if a:
                    att_rows.append({"arm": name, "layers": depth, "method": m, **a})
    out = Path(args.out)
    pd.DataFrame(rows).to_csv(out / "scores.csv", index=False)
    pd.DataFrame(gaps).to_csv(out / "gaps.csv", index=False)
    (out / "attention.json").write_text(json.dumps(att_rows, indent=1))
    print(pd.DataFrame(rows).to_markdown(index=False))
    print()
    print(pd.DataFrame(gaps).to_markdown(index=False))
    print()
    print(pd.DataFrame([{k: v for k, v in r.items() if not k.endswith("weights")} for r in att_rows])
          .to_markdown(index=False))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["run", "report"])
    ap.add_argument("--out", required=True, help="the arms' output roots go here")
    ap.add_argument("--teacher", action="append", required=True,
                    help="SIZE=PARAMS:ROOT: a teacher strength, its params file and the root holding its teacher")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reclaim", action="store_true",
                    help="run: first release the claims of unfinished units (only when no other worker is running)")
    a = ap.parse_args()
    ts = {}
    for spec in a.teacher:
        size, rest = spec.split("=", 1)
        ts[size] = tuple(rest.split(":", 1))
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
    run(a, ts) if a.command == "run" else report(a, ts)
