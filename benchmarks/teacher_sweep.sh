#!/usr/bin/env bash
# The teacher sweep behind the `mini` profile's choice of tasks and teacher settings (docs/teacher_sweep.md).
# About 40 minutes on a 2-core CPU; each line appends its rows to the table.
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
. scripts/env.sh
OUT=${OUT:-docs/teacher_sweep.md}
S="python benchmarks/teacher_sweep.py --epochs 3 --out $OUT"
$S --task sst2 --train 8000 --lr 5e-5 1e-4
$S --task stsb --lr 5e-5 1e-4
$S --task sst2 --train 8000 --lr 1e-4 --precision bf16
$S --task stsb --lr 1e-4 --precision bf16
$S --task cola --lr 1e-4
$S --task rte mrpc --lr 1e-4
