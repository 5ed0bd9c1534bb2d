#!/usr/bin/env bash
# The README's "measured" library run: MiniLM-L6 teachers on full RTE and MRPC, then a 2-layer student
# distilled on RTE with each of the six methods. Writes under ${OUT:-/tmp/alpkd-full} and prints a table.
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
. scripts/env.sh
OUT=${OUT:-/tmp/alpkd-full}
P=benchmarks/mini-full.yaml
for task in rte mrpc; do python -m alpkd --params $P --out "$OUT" teacher --task $task > "$OUT.teacher-$task.log" 2>&1; done
for m in nokd kd pkd alp alp_no alp_po; do python -m alpkd --params $P --out "$OUT" distill --task rte --depth 2 --method $m > "$OUT.distill-$m.log" 2>&1; done
python - "$OUT" <<'PY'
import json, sys, glob
rows = [json.load(open(f)) for f in sorted(glob.glob(sys.argv[1] + "/metrics/teacher/*.json")) + sorted(glob.glob(sys.argv[1] + "/metrics/students/*.json"))]
print("| run | task | layers | train examples | metrics | train time (s) |\n|---|---|---|---|---|---|")
for r in rows:
    ms = ", ".join(f"{k} {100*v:.1f}" for k, v in r["metrics"].items())
    print(f"| {r['method']} | {r['task']} | {r['depth']} | {r['train_examples']} | {ms} | {r['train_time_s']:.0f} |")
PY
