#!/usr/bin/env bash
# The replication in one command, on a fresh clone: set-up, the pipeline, its results.
#
#   scripts/repro.sh              dvc repro on the profile in params.yaml (mini, the default: 56 min on 2 CPUs)
#   scripts/repro.sh ARGS         ARGS go to `dvc repro` (e.g. `report`, `--dry`, `distill@rte-1-alp-42`)
#
# Other profiles, apart from the committed run: scripts/try.sh PROFILE (in tries/PROFILE/; docs/pipeline.md).
# Afterwards: report/results.md (the table), report/figures/, `dvc metrics show`, and the interactive plots,
# offline: dvc plots show --html-template .dvc-template/offline.html   (then open dvc_plots/index.html)
# ALPKD_SKIP_SETUP=1 skips the set-up (a .venv already made by scripts/setup.sh).
# Before dvc repro it prints one line: whether this machine's arithmetic matches that of the machine that made the
# committed run (numerics/fingerprint.json), and then records this machine's fingerprint there.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${ALPKD_SKIP_SETUP:-0}" = 1 ] || scripts/setup.sh
. .venv/bin/activate
. scripts/env.sh
if ! git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  echo "error: $(pwd) is not a git repository; dvc (params, experiments) needs the git clone" >&2
  exit 1
fi
# a bad value in params.yaml (or a task the local GLUE copy lacks) is one `error:` line, before any stage runs
python -m alpkd check
# the offline page for `dvc plots show` (needs npm once; the pipeline does not depend on it)
scripts/plots_template.sh || echo "warning: no offline plots template (npm missing?); dvc plots show needs a network" >&2

# before the hour of work: will this machine reproduce the committed run bit for bit, or its verdicts only?
# (informative only: a damaged file is named in an `error:` line, and the run goes on)
if [ -f numerics/fingerprint.json ]; then
  python -m alpkd numerics --compare numerics/fingerprint.json --out numerics/fingerprint.json ||
    python -m alpkd numerics --out numerics/fingerprint.json || true
else
  echo "numerics: no committed fingerprint (numerics/fingerprint.json) to compare this machine with"
  python -m alpkd numerics --out numerics/fingerprint.json || true
fi
# numerics/fingerprint.json is now this machine's: the machine that made the run left in the working tree

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
