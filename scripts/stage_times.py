#!/usr/bin/env python
"""Where the pipeline's time went: training, evaluation, and start-up and loading, per stage kind.

Reads the executed notebooks in runs/ (papermill records each cell's duration and the notebook's) and the
metrics records (training and evaluation time of every run, and each stage's loading time), and prints a
Markdown table:

  python scripts/stage_times.py [--root .]

Per stage: `wall` is the notebook's duration as papermill measured it; `start-up and loading` is the kernel's
start (wall minus the cells' durations), the set-up cell (imports, params) and the loading of data, teacher
and cache before the first run trains (`group_setup_time_s`, students; the teacher's data loading is inside
its training cell and counted there); `train` and `eval` are the Trainer's training and evaluation time.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def notebook_times(path: Path) -> dict:
    nb = json.loads(path.read_text())
    cells = [c.get("metadata", {}).get("papermill", {}).get("duration") or 0.0 for c in nb["cells"]
             if c["cell_type"] == "code"]
    wall = nb["metadata"].get("papermill", {}).get("duration") or 0.0
    # cells[0]: parameters, cells[1]: injected parameters or set-up; the set-up cell imports and reads params
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    setup = next((d for c, d in zip(code, cells) if "config.load(" in "".join(c["source"])), 0.0)
    return {"wall": wall, "kernel": max(0.0, wall - sum(cells)), "setup": setup}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=".")
    root = Path(ap.parse_args().root)
    rows = {}
    for nb in sorted((root / "runs").glob("*.ipynb")):
        kind = nb.stem.split("-", 1)[0]
        t = notebook_times(nb)
        row = rows.setdefault(kind, {"stages": 0, "wall": 0.0, "startup": 0.0, "train": 0.0, "eval": 0.0})
        row["stages"] += 1
        row["wall"] += t["wall"]
        row["startup"] += t["kernel"] + (t["setup"] if kind != "report" else 0.0)  # the report works in that cell
        if kind in ("distill", "assist"):
            students = root / "metrics" / "students"
            records = [json.loads(p.read_text()) for p in sorted(  # assist: every depth of one task
                (students / nb.stem.removeprefix("distill-")).glob("*/s[0-9]*.json") if kind == "distill" else
                (students / f"{nb.stem.removeprefix('assist-')}-assisted").glob("*/*/s[0-9]*.json"))]
            first = {}  # data, a teacher and its cache are loaded once per (depth: assist) and teacher
            for r in records:
                first.setdefault((r.get("depth"), r.get("teacher_seed")), r.get("group_setup_time_s", 0.0))
            row["startup"] += sum(first.values())
            row["train"] += sum(r.get("train_time_s", 0.0) for r in records)
            row["eval"] += sum(r.get("eval_time_s", 0.0) for r in records)
        elif kind == "teacher":
            task = nb.stem.removeprefix("teacher-")
            for path in sorted((root / "metrics" / "teacher" / task).glob("s[0-9]*.json")):  # one per teacher seed
                row["train"] += json.loads(path.read_text()).get("train_time_s", 0.0)
    total = {k: sum(r[k] for r in rows.values()) for k in ("stages", "wall", "startup", "train", "eval")}
    print("| stages | count | wall (s) | start-up and loading (s) | share | training (s) | evaluation (s) | other (s) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for kind, r in [*rows.items(), ("all", total)]:
        other = r["wall"] - r["startup"] - r["train"] - r["eval"]
        share = r["startup"] / r["wall"] if r["wall"] else 0.0
        print(f"| {kind} | {r['stages']} | {r['wall']:.0f} | {r['startup']:.0f} | {share:.0%} | {r['train']:.0f} | "
              f"{r['eval']:.0f} | {other:.0f} |")


if __name__ == "__main__":
    main()
