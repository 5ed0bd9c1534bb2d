"""`alpkd numerics`: this machine's per-operation fingerprint is stable, moves with the pinning, compares in one line,
and scripts/repro.sh says it before any stage runs."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from helpers import REPO, one_line_error, run_cli

from alpkd import config, fingerprint, numerics


def _child(**changes: str | None) -> dict:
    """The fingerprint computed by `python -m alpkd.fingerprint` under a run's pins with `changes` (None: unset)."""
    env = dict(os.environ, **numerics.settings(config.Runtime()))
    for name, value in changes.items():
        env.pop(name) if value is None else env.__setitem__(name, value)
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run([sys.executable, "-m", "alpkd.fingerprint"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def mine(tmp_path_factory):
    """This machine's fingerprint through the command, as a file (computed once for the module)."""
    path = tmp_path_factory.mktemp("numerics") / "fingerprint.json"
    result = run_cli("numerics", "--out", str(path))
    assert result.returncode == 0, result.stderr[-3000:]
    return path


def test_same_run_to_run_and_pinned_as_a_run(mine):
    first, second = json.loads(mine.read_text()), _child()
    assert second["ops"] == first["ops"] and second["digest"] == first["digest"]
    assert first["machine"]["variables"] == {**numerics.settings(config.Runtime()), **numerics.PACE}
    assert first["machine"]["cpu_capability"] == "AVX2" and first["machine"]["threads"] == 2
    assert first["digest"] == fingerprint.digest(first["ops"])


def test_changes_with_the_pinning(mine):
    """MKL's other reproducible branch rounds the matrix products otherwise (measured on this Intel machine); the
    inputs, which NumPy draws, stay the same."""
    pinned, other = json.loads(mine.read_text())["ops"], _child(MKL_CBWR="COMPATIBLE,STRICT")["ops"]
    moved = {name for name in pinned if pinned[name] != other[name]}
    assert "input" not in moved
    assert {"mm/linear_384x384", "bmm/qk"} <= moved, sorted(moved)


def test_fingerprint_prints_json_alone(mine):
    result = run_cli("numerics", "--fingerprint")
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout)["ops"] == json.loads(mine.read_text())["ops"]


def test_compare_matches_its_own_file(mine):
    result = run_cli("numerics", "--compare", str(mine))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout == ("numerics: this machine's arithmetic matches the committed run's: expect every record "
                             "bit for bit\n")


def test_compare_names_the_operations_that_differ(mine, tmp_path):
    other = json.loads(mine.read_text())
    other["ops"]["softmax"] = "0" * 16
    path = tmp_path / "other.json"
    path.write_text(json.dumps(other))
    result = run_cli("numerics", "--compare", str(path))
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("numerics: this machine's arithmetic differs from the committed "
                                                   f"run's in softmax (1 of {len(other['ops'])} operations)"), lines
    assert "not bit for bit (docs/reproducibility.md)" in lines[0]


@pytest.mark.parametrize("content", [None, "{not json", '{"machine": {}}'], ids=["missing", "damaged", "no-ops"])
def test_unreadable_file_is_one_error_line(tmp_path, content):
    path = tmp_path / "fingerprint.json"
    if content is not None:
        path.write_text(content)
    assert str(path) in one_line_error(run_cli("numerics", "--compare", str(path)), 1)


def test_repro_says_it_before_any_stage(tmp_path):
    """repro.sh, set-up skipped, with a `dvc` that only records its calls: the numerics line comes first, and the
    fingerprint written is this machine's."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(REPO), str(clone)], check=True)
    # the working tree's versions, committed or not
    shutil.copy(REPO / "scripts" / "repro.sh", clone / "scripts" / "repro.sh")
    shutil.copytree(REPO / "alpkd", clone / "alpkd", dirs_exist_ok=True)
    # a .venv whose activate puts the project's venv on PATH behind a `dvc` that only says it was called
    venv_bin = clone / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "activate").write_text(f'export PATH="{venv_bin}:{REPO / ".venv" / "bin"}:$PATH"\n')
    (venv_bin / "dvc").write_text('#!/bin/sh\necho "dvc called: $*"\n')
    (venv_bin / "dvc").chmod(0o755)
    (clone / ".dvc-template").mkdir(exist_ok=True)  # the offline plots page exists: no npm
    (clone / ".dvc-template" / "offline.html").write_text("<html></html>\n")
    (clone / "numerics").mkdir(exist_ok=True)
    (clone / "numerics" / "fingerprint.json").write_text(json.dumps({"ops": {"softmax": "0" * 16}}))
    env = dict(os.environ, ALPKD_SKIP_SETUP="1", PYTHONPATH=str(clone))
    result = subprocess.run(["scripts/repro.sh", "--dry"], cwd=clone, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-3000:])
    lines = result.stdout.splitlines()
    first_numerics = next(i for i, line in enumerate(lines) if line.startswith("numerics: "))
    first_dvc = next(i for i, line in enumerate(lines) if line.startswith("dvc called: "))
    assert first_numerics < first_dvc, lines
    assert lines[first_numerics].startswith("numerics: this machine's arithmetic differs"), lines[first_numerics]
    assert lines[first_dvc] == "dvc called: repro --dry"
    written = fingerprint.load(clone / "numerics" / "fingerprint.json")
    assert len(written["ops"]) > 1 and written["machine"]["variables"]["MKL_CBWR"] == "AVX2,STRICT"
