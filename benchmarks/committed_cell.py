#!/usr/bin/env python
"""Students of seed 1 (teacher 42) of an output root against the committed default run's, field by field, wall times
aside, and their predictions on every validation sentence (docs/transfer_study.md, "With N = 0 nothing changes").

  python benchmarks/committed_cell.py . STUDY/n0 nokd kd pkd alp
"""
import json, re, sys
from pathlib import Path
committed, study = Path(sys.argv[1]), Path(sys.argv[2])
TIME = re.compile(r"_time_s$")
for m in sys.argv[3:]:
    a = json.loads((committed / "metrics/students/sst2-3" / m / "s1.json").read_text())
    b = json.loads((study / "metrics/students/sst2-3" / m / "s1.json").read_text())
    keys = [k for k in {*a, *b} if not TIME.search(k)]
    differ = sorted(k for k in keys if a.get(k) != b.get(k))
    same_env = {k for k in a["environment"] if a["environment"][k] == b["environment"].get(k)}
    pa = json.loads((committed / "predictions/sst2-3" / m / "s1.json").read_text())["validation"]["predictions"]
    pb = json.loads((study / "predictions/sst2-3" / m / "s1.json").read_text())["validation"]["predictions"]
    print(f"{m}: score {a['score']:.6f} vs {b['score']:.6f}; predictions identical: {pa == pb}; fields differing: "
          f"{differ}; environment differing: {sorted(set(a['environment']) - same_env)}")
