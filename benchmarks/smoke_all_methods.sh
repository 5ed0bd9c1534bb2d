#!/bin/bash
# The smoke profile with student depths [2, 1] and all 13 built-in methods, through the CLI (teachers, both depths,
# the assist stage, the report), from the alpkd source at SRC into OUT: what benchmarks/compare_outputs.py compares
# before and after a change that must not move a bit. usage: benchmarks/smoke_all_methods.sh SRC OUT
# (SRC: a copy of the repository's alpkd/ and profiles/, e.g. `git archive HEAD | tar -x -C /tmp/before`)
set -e
SRC=$(cd "$1" && pwd); OUT=$2
REPO=$(cd "$(dirname "$0")/.." && pwd)
rm -rf "$OUT"; mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)
. "$REPO/.venv/bin/activate" && . "$REPO/scripts/env.sh"
export PYTHONPATH=$SRC ALPKD_PROGRESS=0
python - "$SRC/profiles/smoke.yaml" "$OUT/params.yaml" <<'PY'
import sys, yaml
raw = yaml.safe_load(open(sys.argv[1]))
raw["student"]["depths"] = [2, 1]
raw["distill"]["methods"] = ["nokd", "kd", "pkd", "alp", "alp_no", "alp_po", "alp_scaled", "rail", "reverse",
                             "all_to_one", "takd", "dgkd", "ceskd"]
yaml.safe_dump(raw, open(sys.argv[2], "w"), sort_keys=False)
PY
cd "$OUT"  # the folder holding params.yaml: its custom/ is the users' methods (none here)
for step in "teacher --task rte" "distill --task rte --depth 2" "distill --task rte --depth 1" "assist --task rte"; do
  python -m alpkd --params params.yaml --out "$OUT" $step > /dev/null
done
python -c "from alpkd import config; from alpkd.report import write_report; write_report(config.load('params.yaml'), '.')"
