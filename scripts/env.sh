# Sourced by the scripts: offline-friendly, quiet, and the local GLUE copy when it is beside the repository.
export DVC_NO_ANALYTICS=1 HF_HUB_DISABLE_PROGRESS_BARS=1 TQDM_DISABLE=1 HF_DATASETS_DISABLE_PROGRESS_BARS=1
export TOKENIZERS_PARALLELISM=false TRANSFORMERS_NO_ADVISORY_WARNINGS=1
if [ -z "${ALPKD_GLUE_DIR:-}" ] && [ -d "$(dirname "${BASH_SOURCE[0]}")/../../shared/glue" ]; then
  export ALPKD_GLUE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../shared/glue" && pwd)"
fi
# (an `if`, not `&&`: sourcing this from a `set -e` script must not fail when no local GLUE copy is found)
if [ -n "${ALPKD_GLUE_DIR:-}" ]; then export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}; fi
export TRANSFORMERS_VERBOSITY=error  # library warnings stay out of the executed notebooks
# papermill's kernel (`-k python3`) from scripts/jupyter/kernels/: the stock one with its start-up log at ERROR, so no
# stage prints the kernel's "running over TCP without encryption" warning (local 127.0.0.1 sockets; nothing to do)
export JUPYTER_PATH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/jupyter${JUPYTER_PATH:+:$JUPYTER_PATH}"
