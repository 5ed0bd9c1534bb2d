"""Test helpers: the checkout on sys.path, offline settings, independent readers of the local GLUE copy."""
from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "profiles" / "smoke.yaml"
TASK = "rte"
TEACHER_SEED = 42  # the smoke profile's first teacher seed

# Offline and quiet, whether or not scripts/env.sh was sourced; nothing may download.
_glue = REPO.parent / "shared" / "glue"
if not os.environ.get("ALPKD_GLUE_DIR") and _glue.is_dir():
    os.environ["ALPKD_GLUE_DIR"] = str(_glue)
for _var, _val in {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TQDM_DISABLE": "1",
                   "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
                   "TOKENIZERS_PARALLELISM": "false", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1"}.items():
    os.environ.setdefault(_var, _val)
# the package is used from the checkout (it need not be installed)
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def run_cli(*args: str, cwd: Path = REPO, timeout: int = 300) -> subprocess.CompletedProcess:
    """`python -m alpkd ARGS` in a fresh interpreter, with the checkout importable."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, "-m", "alpkd", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def params_file(folder: Path, raw: dict | None = None) -> Path:
    """A params file in `folder` (which then counts as the repository root for relative paths): `raw` as YAML,
    or the smoke profile as it is."""
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(raw) if raw is not None else SMOKE.read_text())
    return path


def one_line_error(result: subprocess.CompletedProcess, code: int) -> str:
    """The one `error: ...` line of a CLI run that failed as expected: exit `code`, no traceback, nothing on stdout,
    nothing after the line."""
    assert result.returncode == code, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.stdout == "", result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-3000:]
    assert result.stderr.rstrip("\n").endswith(errors[0]), result.stderr[-3000:]  # nothing after it
    return errors[0]


def distill_params(**overrides) -> types.SimpleNamespace:
    """The weights `distillation_loss` reads, with values unlike the defaults so that mix-ups show."""
    base = dict(temperature=3.0, kd_alpha=0.3, pkd_beta=7.0, pkd_exclude_last=True, alp_lambda=2.5,
                alp_scale=False, alp_overlap=1, rail_weight=11.0)
    base.update(overrides)
    return types.SimpleNamespace(**base)


def glue_frame(task: str, split: str) -> pd.DataFrame:
    """A GLUE split read straight from the local parquet files (not through `datasets`)."""
    files = sorted(glob.glob(os.path.join(os.environ["ALPKD_GLUE_DIR"], task, f"{split}-*.parquet")))
    assert files, f"no local GLUE parquet for {task}/{split}"
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def subsample_rows(n_total: int, n: int | None) -> np.ndarray:
    """Positions of the documented subsample: the first n of a permutation with seed 0."""
    if n is None or n >= n_total:
        return np.arange(n_total)
    return np.random.default_rng(0).permutation(n_total)[:n]


def clone_teacher(src: Path, dst: Path, task: str = TASK) -> Path:
    """A fresh output root holding only the trained teachers (every seed) and their caches from `src`."""
    from alpkd.paths import Layout

    a, b = Layout(Path(src)), Layout(Path(dst))
    shutil.copytree(a.teacher_model(task, TEACHER_SEED).parent, b.teacher_model(task, TEACHER_SEED).parent)
    shutil.copytree(a.cache(task, TEACHER_SEED).parent, b.cache(task, TEACHER_SEED).parent)
    return Path(dst)


# --- the pipeline in a fresh clone (tests/test_pipeline.py, tests/test_paper_rehearsal.py) ------------------
# pipeline outputs (and scratch) of the checkout are not part of a fresh clone
OUTPUT_DIRS = {"data", "models", "cache", "metrics", "attention", "logs", "report", "runs", "checkpoints", "scratch"}


def source_files() -> list[str]:
    """The checkout as it would be committed: tracked and not-ignored files, without pipeline outputs."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    files = [f for f in out.split("\0") if f]
    return [f for f in files if f.split("/")[0] not in OUTPUT_DIRS and f != "dvc.lock" and (REPO / f).is_file()]


def sh(cmd: list[str], cwd: Path, env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result


def ran_stages(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def changed_stages(repo: Path, env: dict) -> dict:
    return json.loads(sh(["dvc", "status", "--json"], repo, env).stdout or "{}")


def pipeline_env(local_glue: bool = True) -> dict:
    """The environment of a `dvc repro` in a fresh clone (tests/test_pipeline.py, tests/test_paper_rehearsal.py);
    skips the test without dvc, or without a local GLUE copy when `local_glue` (the rehearsal brings its own)."""
    import pytest

    if local_glue and not os.environ.get("ALPKD_GLUE_DIR"):
        pytest.skip("needs a local GLUE copy (ALPKD_GLUE_DIR or ../shared/glue)")
    if shutil.which("dvc", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("needs dvc and papermill (pip install -e '.[pipeline]')")
    from alpkd import numerics

    # without the numerics variables the test process was started with (conftest pins them for itself): the
    # stages' processes, papermill kernels included, must set them from params.yaml on their own
    clean = {k: v for k, v in os.environ.items() if k not in numerics.VARIABLES}
    return dict(clean, PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
                DVC_NO_ANALYTICS="1", GIT_AUTHOR_NAME="test", GIT_AUTHOR_EMAIL="test@example.com",
                GIT_COMMITTER_NAME="test", GIT_COMMITTER_EMAIL="test@example.com")


def make_repo(repo: Path, env: dict, params: dict, files: dict[str, str] | None = None) -> Path:
    """A fresh git repository at `repo` holding the checkout, `params` as params.yaml, and `files` (path: text)."""
    for f in source_files():
        (repo / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / f, repo / f)
    for f, text in (files or {}).items():
        (repo / f).parent.mkdir(parents=True, exist_ok=True)
        (repo / f).write_text(text)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(["git", "init", "-q"], repo, env)
    sh(["git", "add", "-A"], repo, env)
    sh(["git", "commit", "-q", "-m", "checkout"], repo, env)
    return repo
