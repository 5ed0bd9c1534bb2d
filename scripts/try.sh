#!/usr/bin/env bash
# Run a profile without touching the committed run: the whole pipeline in tries/<name>/ (git-ignored).
#
#   scripts/try.sh quick                          the pipeline on profiles/quick.yaml, in tries/quick/
#   scripts/try.sh quick -S distill.temperature=2.0   an experiment on it: only what the change touches re-runs
#   scripts/try.sh my.yaml                        any params file (its name without .yaml names the folder)
#   python -m alpkd compare tries/quick           the runs of a try side by side (parameters that differ, metrics)
#   rm -rf tries/                                 back to nothing but the committed run
#
# tries/<name>/ is a small DVC project of its own (its own git repository and DVC cache): params.yaml is the
# profile, dvc.yaml a copy of the repository's, and alpkd/, notebooks/ and custom/ are links to the repository's,
# so a try runs today's code. The first run is committed there as the try's baseline; each `-S` run is a DVC
# experiment on that baseline (`dvc exp run`), so `dvc exp show` works inside it too. The repository's own
# outputs, dvc.lock and git status never change (tests/test_try.py). ALPKD_SKIP_SETUP=1 skips the set-up.
set -euo pipefail
caller=$(pwd)  # a params file given by path is taken from here
cd "$(dirname "$0")/.."
repo=$(pwd)
if [ $# -lt 1 ] || [[ "$1" == -* ]]; then
  sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
profile=$1
shift
if [ -f "profiles/$profile.yaml" ]; then
  file="$repo/profiles/$profile.yaml"
elif (cd "$caller" && [ -f "$profile" ]); then
  file=$(cd "$caller" && cd "$(dirname "$profile")" && pwd)/$(basename "$profile")
else
  echo "error: no profile $profile: neither profiles/$profile.yaml nor a file $profile" \
       "(profiles: $(cd profiles && ls *.yaml | sed 's/\.yaml$//' | tr '\n' ' '))" >&2
  exit 2
fi
name=$(basename "$file" .yaml)
sets=()
while [ $# -gt 0 ]; do
  case $1 in
    -S|--set-param) [ $# -ge 2 ] || { echo "error: $1 needs key=value" >&2; exit 2; }; sets+=(-S "$2"); shift 2 ;;
    -S*) sets+=(-S "${1#-S}"); shift ;;
    *) echo "error: unknown argument $1 (scripts/try.sh PROFILE [-S key=value ...])" >&2; exit 2 ;;
  esac
done
[ "${ALPKD_SKIP_SETUP:-0}" = 1 ] || [ -x .venv/bin/python ] || scripts/setup.sh
. .venv/bin/activate
. scripts/env.sh
# a bad value (in the profile or a change to it) is one line, before anything is made or removed
python -m alpkd --params "$file" check "${sets[@]}" >/dev/null

dir=$repo/tries/$name
git_() { git -C "$dir" -c user.name=alpkd -c user.email=alpkd@localhost -c commit.gpgsign=false "$@"; }
if [ ! -d "$dir/.git" ]; then
  mkdir -p "$dir"
  git_ init -q
  for link in alpkd notebooks custom; do ln -sfn "../../$link" "$dir/$link"; done
  (cd "$dir" && dvc init -q)
  cp .dvc/config "$dir/.dvc/config"
  (cd "$dir" && dvc config core.autostage true)  # no "to track the changes with git" hints: try.sh commits
  cp -r .dvc/plots "$dir/.dvc/"
  printf '%s\n' checkpoints/ scratch/ dvc_plots/ > "$dir/.gitignore"
fi
cp dvc.yaml "$dir/dvc.yaml"  # today's pipeline
cd "$dir"
start=$SECONDS
if [ ${#sets[@]} -eq 0 ]; then
  cp "$file" params.yaml
  python -m alpkd check
  dvc repro
  git_ add -A
  git_ commit -qm "$name: $(date -u +%FT%TZ)" || true  # nothing new when nothing re-ran
  echo "try $name: $((SECONDS - start)) s; results: tries/$name/report/results.md"
else
  if ! git_ rev-parse -q --verify HEAD:report/summary.json >/dev/null; then
    echo "error: tries/$name has no finished run to experiment on; run \`scripts/try.sh $name\` first" >&2
    exit 1
  fi
  git_ checkout -q HEAD -- params.yaml  # each experiment is its changes on the baseline alone
  python -m alpkd check "${sets[@]}"
  dvc exp run "${sets[@]}"
  echo "try $name, experiment: $((SECONDS - start)) s"
fi
echo
python -m alpkd compare "$dir"
