"""The command line: outputs under an explicit root, stdout the JSON record alone, one-line expected errors."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from helpers import REPO, SMOKE, TASK, one_line_error, params_file, run_cli


@pytest.mark.slow
def test_teacher_writes_under_scratch_and_prints_only_json(tmp_path):
    """Without --out nothing of the pipeline's own outputs (metrics/, models/ in the working folder) is written."""
    params = params_file(tmp_path)
    result = run_cli("--params", str(params), "teacher", "--task", TASK, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    records = json.loads(result.stdout)  # the whole of stdout: trainer logs went to stderr
    assert [(r["role"], r["task"], r["seed"]) for r in records] == [("teacher", TASK, 42), ("teacher", TASK, 43)]
    for seed in (42, 43):  # every seed of teacher.seeds
        assert (tmp_path / "scratch" / "metrics" / "teacher" / TASK / f"s{seed}.json").is_file()
    assert not (tmp_path / "metrics").exists() and not (tmp_path / "models").exists()
    assert "loss" in result.stderr  # the Trainer's progress is still shown, on stderr


def test_cache_without_a_teacher_names_the_folder(tmp_path):
    params = params_file(tmp_path)
    line = one_line_error(run_cli("--params", str(params), "cache", "--task", TASK, cwd=tmp_path), 1)
    assert str(Path("scratch") / "models" / TASK / "teacher" / "s42") in line and "teacher --task rte --seed 42" in line, line


def test_evaluate_missing_model_names_the_folder(tmp_path):
    params = params_file(tmp_path)
    missing = tmp_path / "no" / "such" / "model"
    line = one_line_error(run_cli("--params", str(params), "evaluate", "--task", TASK, "--model", str(missing),
                                   cwd=tmp_path), 1)
    assert str(missing) in line and "Repo id" not in line, line


def test_data_error_is_one_line(tmp_path):
    raw = yaml.safe_load(SMOKE.read_text())
    (tmp_path / "train.csv").write_text("text,label\ngood,1\nbad,0\nmeh,0.5\n")
    raw["custom_tasks"] = {"reviews": {"train": "train.csv", "validation": "train.csv", "text_columns": ["text"],
                                       "num_labels": 2, "metrics": ["accuracy"]}}
    raw["data"]["tasks"] = ["reviews"]
    params = params_file(tmp_path, raw)
    line = one_line_error(run_cli("--params", str(params), "teacher", "--task", "reviews", cwd=tmp_path), 1)
    assert "train.csv: line 4, column 'label': label 0.5" in line, line


def test_config_error_is_one_line_exit_2(tmp_path):
    params = params_file(tmp_path)
    params.write_text(params.read_text() + "profile: again\n")
    line = one_line_error(run_cli("--params", str(params), "check", cwd=tmp_path), 2)
    assert "'profile' appears twice" in line, line


def test_default_output_root_is_scratch():
    from alpkd import __main__ as cli

    assert cli.DEFAULT_OUT == "scratch"
    assert "scratch/" in (Path(__file__).resolve().parents[1] / ".gitignore").read_text().splitlines()


def test_version_prints_the_package_version():
    import alpkd

    result = run_cli("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"alpkd {alpkd.__version__}"


def test_console_script_is_declared_and_resolves():
    """pyproject's `alpkd` entry point names a function that exists; its version agrees with the package's."""
    import importlib

    import alpkd

    tomllib = pytest.importorskip("tomllib")  # the standard library from Python 3.11 (3.10 is supported)

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["version"] == alpkd.__version__
    module, _, name = project["scripts"]["alpkd"].partition(":")
    assert callable(getattr(importlib.import_module(module), name))


def test_console_script_exit_status_and_prog(tmp_path):
    """What pip's generated `alpkd` script does, `sys.exit(main())` with argv[0] = alpkd: the status is main's."""
    import os
    import subprocess
    import sys

    wrapper = ("import sys; sys.argv[0] = '/some/bin/alpkd'; from alpkd.__main__ import main; sys.exit(main())")
    env = dict(os.environ, PYTHONPATH=str(REPO))

    def alpkd(*args):
        return subprocess.run([sys.executable, "-c", wrapper, *args], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=120)

    usage = alpkd("--help")
    assert usage.returncode == 0 and usage.stdout.startswith("usage: alpkd "), usage.stdout[:200]
    (tmp_path / "params.yaml").write_text("profile: smoke\n")  # invalid: missing keys
    bad = alpkd("check")
    assert bad.returncode == 2 and bad.stderr.startswith("error: "), (bad.returncode, bad.stderr[-500:])
    good = alpkd("--params", str(SMOKE), "check")
    assert good.returncode == 0, good.stderr[-500:]
