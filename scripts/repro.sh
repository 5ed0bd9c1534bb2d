#!/usr/bin/env bash
# The replication in one command, on a fresh clone: set-up, the pipeline, its results.
#
#   scripts/repro.sh              dvc repro on the profile in params.yaml (mini, the default: 56 min on 2 CPUs)
#   scripts/repro.sh ARGS         ARGS go to `dvc repro` (e.g. `report`, `--dry`, `distill@rte-1-alp-42`)
#
# Other profiles: copy one over params.yaml first (`cp profiles/smoke.yaml params.yaml`), or change single
# values with `dvc exp run -S distill.temperature=4.0` (an experiment: compare with `dvc exp show`).
# Afterwards: report/results.md (the table), report/figures/, `dvc metrics show`, and the interactive plots,
# offline: dvc plots show --html-template .dvc-template/offline.html   (then open dvc_plots/index.html)
# ALPKD_SKIP_SETUP=1 skips the set-up (a .venv already made by scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${ALPKD_SKIP_SETUP:-0}" = 1 ] || scripts/setup.sh
. .venv/bin/activate
. scripts/env.sh
if ! git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  echo "error: $(pwd) is not a git repository; dvc (params, experiments) needs the git clone" >&2
  exit 1
fi
# the offline page for `dvc plots show` (needs npm once; the pipeline does not depend on it)
scripts/plots_template.sh || echo "warning: no offline plots template (npm missing?); dvc plots show needs a network" >&2

start=$SECONDS
dvc repro "$@"
echo "dvc repro: $((SECONDS - start)) s"
# dvc repro leaves each output as a copy beside its copy in .dvc/cache; link them (cache.type in .dvc/config)
dvc checkout --relink -q
echo
sed '/^## Figures/,$d' report/results.md
dvc metrics show report/summary.json
if [ -s .dvc-template/offline.html ]; then
  dvc plots show --html-template .dvc-template/offline.html >/dev/null && echo "plots: dvc_plots/index.html"
fi
