"""On a CPU, is a stage faster as Ray students of one thread each, two at a time, than as local students of two
threads, one at a time? And do 1-thread and 2-thread students give the same metrics?

    python benchmarks/ray_cpu.py --teachers <root>                          # mini: its first task and depth
    python benchmarks/ray_cpu.py --params profiles/smoke.yaml --teachers <root> --students 2 --rounds 1  # a dry run

`--teachers` is an output root that already holds the profile's teachers and their caches (`models/`, `cache/`, e.g.
after `dvc repro teacher@<task>`); nothing is written there. Each round runs the stage's first method for N student
seeds both ways, each in a fresh `python -m alpkd distill` process (its numerics pinned for its thread count):
`ray` (runtime.executor: ray, a Ray started on this machine, runtime.threads 1, student_cpus 1: as many students
at a time as there are cores) and `local` (runtime.threads 2, one student at a time). Rounds are interleaved and
alternate which way goes first, so that a drifting machine affects both alike; the medians are compared. The wall
clock includes each process's start (Ray's own start in the `ray` case): what a stage costs. PITFALLS.md measured
27.6 s for two 1-thread processes against 21.4 s for one 2-thread one (12 s of it start-up).
Measured 2026-12-05 (docs/PERFORMANCE.md): Ray 0.97 of local on mini's sst2-3 KD stage, identical metrics.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
WAYS = {"ray": {"executor": "ray", "threads": 1, "student_cpus": 1}, "local": {"executor": "local", "threads": 2}}


def params_for(raw: dict, way: str, seeds: list[int], method: str) -> dict:
    raw = json.loads(json.dumps(raw))
    raw["distill"]["seeds"], raw["distill"]["methods"] = seeds, [method]
    # the students are shared equally by the teachers: the first k teachers, k the most that divides N
    teachers = raw["teacher"]["seeds"]
    raw["teacher"]["seeds"] = teachers[:max(k for k in range(1, len(teachers) + 1) if len(seeds) % k == 0)]
    raw["runtime"].update(WAYS[way])
    return raw


def run_way(raw: dict, way: str, teachers: Path, work: Path, task: str, depth: int) -> tuple[float, dict]:
    """One stage run one way in a fresh output root holding copies of the teachers; (wall seconds, records)."""
    from alpkd.paths import Layout, Run

    out = work / way
    shutil.rmtree(out, ignore_errors=True)
    for part in ("models", "cache", "data"):
        if (teachers / part).exists():
            shutil.copytree(teachers / part, out / part, ignore=shutil.ignore_patterns(f"{task}-*"))
    (work / f"{way}.yaml").write_text(yaml.safe_dump(raw))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # each process pins its own from params (alpkd.numerics)
        env.pop(var, None)
    began = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "alpkd", "--params", str(work / f"{way}.yaml"), "--out", str(out),
                           "distill", "--task", task, "--depth", str(depth)], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - began
    if done.returncode != 0:
        sys.exit(f"{way}: the stage failed:\n{done.stderr[-3000:]}")
    layout, method = Layout(out), raw["distill"]["methods"][0]
    records = {}
    for seed in raw["distill"]["seeds"]:
        records[seed] = json.loads(layout.student_metrics(Run(task, depth, method, seed)).read_text())
    return wall, records


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default=str(ROOT / "profiles" / "mini.yaml"))
    ap.add_argument("--teachers", required=True, help="an output root holding the teachers and their caches")
    ap.add_argument("--task", help="default: the first of data.tasks")
    ap.add_argument("--depth", type=int, help="default: the first of student.depths")
    ap.add_argument("--method", help="default: the first of distill.methods")
    ap.add_argument("--students", type=int, default=4, help="student seeds per stage run (N), each way")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work", default=str(ROOT / "scratch" / "ray_cpu"), help="scratch folder (emptied)")
    ap.add_argument("--out", help="also write the table to this Markdown file")
    args = ap.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    from alpkd.params_file import read_yaml

    raw = read_yaml(args.params)  # as the library and DVC read it (YAML 1.2)
    task = args.task or raw["data"]["tasks"][0]
    depth = args.depth or raw["student"]["depths"][0]
    method = args.method or raw["distill"]["methods"][0]
    seeds = list(raw["distill"]["seeds"])
    seeds = (seeds + [max(seeds) + 1 + k for k in range(args.students)])[:args.students]
    teachers, work = Path(args.teachers).resolve(), Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    walls, records = {w: [] for w in WAYS}, {}
    for r in range(args.rounds):
        for way in (list(WAYS) if r % 2 == 0 else list(reversed(WAYS))):
            wall, records[way] = run_way(params_for(raw, way, seeds, method), way, teachers, work, task, depth)
            walls[way].append(wall)
            print(f"round {r + 1}/{args.rounds}  {way}: {wall:.1f} s", file=sys.stderr, flush=True)

    ncpu = os.cpu_count()
    med = {w: statistics.median(v) for w, v in walls.items()}
    same = {s: records["ray"][s]["metrics"] == records["local"][s]["metrics"] for s in seeds}
    lines = [f"# Ray on a CPU: {raw['profile']} {task}-{depth} {method}, {len(seeds)} students, {args.rounds} "
             f"round(s), {ncpu} cores ({records['local'][seeds[0]]['environment'].get('cpu')})", "",
             "| way | threads per student | students at a time | wall s (median) | rounds (s) | ratio to local |",
             "|---|---|---|---|---|---|",
             f"| ray | 1 | {ncpu} | {med['ray']:.1f} | {', '.join(f'{x:.1f}' for x in walls['ray'])} | "
             f"{med['ray'] / med['local']:.2f} |",
             f"| local | 2 | 1 | {med['local']:.1f} | {', '.join(f'{x:.1f}' for x in walls['local'])} | 1.00 |", "",
             f"1-thread (ray) and 2-thread (local) students give identical metrics: "
             f"{'yes' if all(same.values()) else 'no'} "
             f"({', '.join(f's{s}: ' + ('same' if v else 'different') for s, v in same.items())})"]
    for s in seeds:
        lines.append(f"- s{s}: score {records['ray'][s]['score']} (1 thread) vs {records['local'][s]['score']} "
                     "(2 threads)")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
