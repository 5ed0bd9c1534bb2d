#!/usr/bin/env python3
"""Compare two runs' outputs file by file (benchmarks/smoke_all_methods.sh writes them): every file under metrics/ predictions/ attention/ logs/ cache/ report/,
byte for byte; JSON records with their timing fields (wall times) removed first; CSV logs with their runtime columns
removed. Prints one line per difference and a summary."""
import json, sys, csv, io, re
from pathlib import Path

A, B = Path(sys.argv[1]), Path(sys.argv[2])
KINDS = ["metrics", "predictions", "attention", "logs", "cache", "report"]
TIMING = re.compile(r"(_time_s$|^time_s$|runtime|per_second|^created|timestamp|^wall)")

def strip(obj):
    if isinstance(obj, dict):
        return {k: strip(v) for k, v in obj.items() if not TIMING.search(k)}
    if isinstance(obj, list):
        return [strip(v) for v in obj]
    return obj

def content(path):
    data = path.read_bytes()
    if path.suffix == ".json":
        return json.dumps(strip(json.loads(data)), sort_keys=False).encode(), "json-timing-stripped"
    if path.suffix == ".csv" and "logs" in path.parts:
        rows = list(csv.reader(io.StringIO(data.decode())))
        keep = [i for i, h in enumerate(rows[0]) if not TIMING.search(h)]
        return "\n".join(",".join(r[i] for i in keep if i < len(r)) for r in rows).encode(), "csv-timing-stripped"
    return data, "bytes"

files = lambda root: {p.relative_to(root) for k in KINDS for p in (root / k).rglob("*") if p.is_file()}
fa, fb = files(A), files(B)
bad = 0
for rel in sorted(fa ^ fb):
    print("only in", A if rel in fa else B, rel); bad += 1
same = 0
for rel in sorted(fa & fb):
    if rel.suffix == ".png":  # figures: drawn from the same numbers (matplotlib metadata aside)
        continue
    (x, how), (y, _) = content(A / rel), content(B / rel)
    if x != y:
        print("DIFFERS", rel, how); bad += 1
    else:
        same += 1
print(f"{same} files identical, {bad} differences ({len(fa & fb)} common files, PNGs not compared)")
sys.exit(1 if bad else 0)
