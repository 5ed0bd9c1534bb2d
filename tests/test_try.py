"""Trying a profile leaves the committed run alone (scripts/try.sh), and a bad value stops a run in one line.

In a fresh git repository holding the checkout with its committed outputs: `scripts/try.sh smoke` runs the whole
pipeline under tries/smoke/, an experiment on it (`-S distill.temperature=2.0`) re-runs the students only, `python
-m alpkd compare` shows the changed parameter beside both runs' metrics, and afterwards `git status --porcelain`
is empty and no tracked file changed (the file: 1 min 47 s to 5 min 41 s, with other jobs on the 2 cores). A bad
value under scripts/repro.sh or scripts/try.sh is one `error:` line and no stage runs (seconds).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers import REPO, pipeline_env, sh


def _tracked() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    return [f for f in out.split("\0") if f and (REPO / f).is_file() and not f.startswith("tries/")]


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> tuple[Path, dict]:
    """The checkout as committed, outputs included, in a fresh git repository with this .venv linked in."""
    env = pipeline_env()
    repo = tmp_path_factory.mktemp("try") / "repo"
    for f in _tracked():
        (repo / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / f, repo / f)
    venv = REPO / ".venv"
    if not (venv / "bin" / "activate").is_file():
        pytest.skip("needs the set-up's .venv (scripts/setup.sh)")
    (repo / ".venv").symlink_to(venv)
    sh(["git", "init", "-q"], repo, env)
    (repo / ".git" / "info" / "exclude").write_text(".venv\n")  # a link, which `.venv/` does not match
    sh(["git", "add", "-A"], repo, env)
    sh(["git", "commit", "-q", "-m", "checkout"], repo, env)
    return repo, dict(env, ALPKD_SKIP_SETUP="1")


def _digest(repo: Path) -> dict[str, str]:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=repo, capture_output=True, text=True,
                           check=True).stdout.split("\0")
    return {f: hashlib.sha256((repo / f).read_bytes()).hexdigest() for f in files if f}


def _one_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0, result.stdout[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "Running stage" not in result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-3000:]
    return errors[0]


def test_bad_value_under_repro_is_one_line_and_runs_nothing(clone):
    repo, env = clone
    params = repo / "params.yaml"
    good = params.read_text()
    try:
        params.write_text(good.replace("temperature: 5.0", "temperature: -1.0"))
        result = subprocess.run(["scripts/repro.sh"], cwd=repo, env=env, capture_output=True, text=True, timeout=300)
        assert "distill.temperature" in _one_error(result)
    finally:
        params.write_text(good)


def test_bad_change_under_try_is_one_line_and_runs_nothing(clone):
    repo, env = clone
    result = subprocess.run(["scripts/try.sh", "smoke", "-S", "distill.temperature=-1"], cwd=repo, env=env,
                            capture_output=True, text=True, timeout=300)
    assert "distill.temperature" in _one_error(result)
    result = subprocess.run(["scripts/try.sh", "nosuchprofile"], cwd=repo, env=env, capture_output=True, text=True)
    assert "no profile nosuchprofile" in _one_error(result)


@pytest.mark.slow
def test_try_leaves_the_committed_run_alone(clone):
    repo, env = clone
    before = _digest(repo)
    first = sh(["scripts/try.sh", "smoke"], repo, env, timeout=900)
    assert "Running stage 'teacher@rte'" in first.stdout + first.stderr
    assert (repo / "tries" / "smoke" / "report" / "summary.json").is_file()
    # two values at once, one of them a small transfer set (docs/transfer_study.md): the students' notebooks run it
    again = sh(["scripts/try.sh", "smoke", "-S", "distill.temperature=2.0", "-S", "distill.transfer_samples=16"],
               repo, env, timeout=900)
    ran = again.stdout + again.stderr
    assert "Running stage 'distill@rte-1'" in ran and "Running stage 'teacher@rte'" not in ran
    kd = json.loads((repo / "tries" / "smoke" / "metrics" / "students" / "rte-1" / "kd" / "s42.json").read_text())
    nokd = json.loads((repo / "tries" / "smoke" / "metrics" / "students" / "rte-1" / "nokd" / "s42.json").read_text())
    assert kd["transfer_examples"] == 16 and "transfer_examples" not in nokd
    # the comparison names the changed parameters, with both values, beside the metrics, within 100 columns
    table = sh([str(repo / ".venv" / "bin" / "python"), "-m", "alpkd", "compare", "tries/smoke"], repo, env).stdout
    row = next(line for line in table.splitlines() if "distill.temperature" in line)
    assert row.split()[1:] == ["5", "2"], table
    row = next(line for line in table.splitlines() if "distill.transfer_samples" in line)
    assert row.split()[1:] == ["0", "16"], table
    assert "teacher.rte" in table and max(map(len, table.splitlines())) <= 100, table
    # nothing of the committed run changed, nothing new shows in git status
    assert sh(["git", "status", "--porcelain"], repo, env).stdout == ""
    assert _digest(repo) == before
    assert os.listdir(repo / "tries") == ["smoke"]


def test_check_says_a_task_the_local_glue_copy_lacks_is_not_valid(tmp_path):
    from helpers import one_line_error, params_file, run_cli
    import yaml

    if not os.environ.get("ALPKD_GLUE_DIR") or (Path(os.environ["ALPKD_GLUE_DIR"]) / "qnli").exists():
        pytest.skip("needs a local GLUE copy without qnli")
    raw = yaml.safe_load(params_file(tmp_path).read_text())
    raw["data"]["tasks"] = ["qnli"]
    line = one_line_error(run_cli("--params", str(params_file(tmp_path, raw)), "check", cwd=tmp_path), 1)
    assert "'qnli' is not valid here" in line and "qnli/train-*.parquet" in line
    # the same through -S, as scripts/try.sh checks a change before DVC applies it
    line = one_line_error(run_cli("--params", str(params_file(tmp_path)), "check", "-S", "data.tasks=[qnli]",
                                  cwd=tmp_path), 1)
    assert "'qnli' is not valid here" in line


def test_compare_shows_changed_parameters_and_metrics_within_100_columns(tmp_path):
    from alpkd import compare
    import json
    import yaml

    runs = []
    for i, temperature in enumerate([5.0, 2.0, 4.0, 8.0, 1.5, 3.0]):
        run = tmp_path / f"a-rather-long-run-name-{i}"
        (run / "report").mkdir(parents=True)
        (run / "params.yaml").write_text(yaml.safe_dump({"distill": {"temperature": temperature, "epochs": 2}}))
        (run / "report" / "summary.json").write_text(json.dumps({"students_3L": {"kd": 80 + i / 3, "nokd": 79.5}}))
        runs.append(str(run))
    table = compare.render(compare.gather(runs))
    assert max(map(len, table.splitlines())) <= 100, table
    rows = [line.split() for line in table.splitlines()]
    assert ["distill.temperature", "5", "2", "4"] == rows[2][:4], table  # the first block of columns
    assert not any(r and r[0] == "distill.epochs" for r in rows)  # the same everywhere: not shown
    assert ["students_3L.kd", "80.00", "80.33"] == next(r for r in rows if r and r[0] == "students_3L.kd")[:3]
    with pytest.raises(compare.CompareError, match="no report/summary.json"):
        compare.gather([str(tmp_path), runs[0]])
