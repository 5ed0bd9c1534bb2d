#!/usr/bin/env bash
# The whole test suite on a fresh machine: set-up, library tests, notebooks (nbval).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. .venv/bin/activate
# Ray for tests/test_ray.py; not in setup.sh: the default run (runtime.executor: local) does not need it
pip install -q -c constraints.txt -e ".[ray]" 2>&1 | grep -v "^WARNING: Location" || true
. scripts/env.sh
python -m pytest tests -q "$@"
if ls notebooks/*.ipynb >/dev/null 2>&1; then
  python -m pytest --nbval-lax --nbval-current-env -p no:cacheprovider notebooks/ -q
fi
