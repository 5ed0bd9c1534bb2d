"""The package installs whole: a wheel built from the checkout holds every module of alpkd/, its subpackages
(alpkd/report) included."""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_holds_every_module(tmp_path):
    # built from a copy of what the build reads: no build/ or *.egg-info left in the checkout, and none of theirs
    # (a stale build/lib would hide a module the package list leaves out)
    source = tmp_path / "source"
    shutil.copytree(ROOT / "alpkd", source / "alpkd", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    # --no-build-isolation: the environment's setuptools (pyproject's build requirement), no download
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "dist"), str(source)], check=True, capture_output=True, cwd=tmp_path)
    wheels = list((tmp_path / "dist").glob("alpkd-*.whl"))
    assert len(wheels) == 1, wheels
    names = set(zipfile.ZipFile(wheels[0]).namelist())
    modules = {f.relative_to(ROOT).as_posix() for f in (ROOT / "alpkd").rglob("*.py")}
    assert modules, "no modules found under alpkd/"
    missing = sorted(modules - names)
    assert not missing, f"the wheel leaves out {missing}"
