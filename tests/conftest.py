"""Shared fixtures: the smoke profile and a trained smoke teacher (helpers in helpers.py).

Every check in this suite compares the library with an independent computation (plain loops in numpy,
scikit-learn, SciPy, a fresh model forward), never with the library itself.
"""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from helpers import SMOKE, TASK  # also makes the checkout importable and the environment offline

from alpkd import config as _config, numerics as _numerics  # noqa: E402 (light: no torch yet)

# the smoke profile's portable numerics, set before any test imports torch (alpkd.numerics.check refuses to
# train otherwise); CLI subprocesses inherit the variables
_numerics.pin(_config.load(SMOKE.resolve()).runtime)
import alpkd.methods  # noqa: E402,F401 (the declarations tell alpkd.paths which methods' folders are the assist stage's)


@pytest.fixture
def smoke_raw() -> dict:
    """profiles/smoke.yaml as a plain dict (a fresh copy per test, free to modify)."""
    return copy.deepcopy(yaml.safe_load(SMOKE.read_text()))


@pytest.fixture(scope="session")
def smoke_params():
    from alpkd import config

    return config.load(SMOKE.resolve())


@pytest.fixture(scope="session")
def teacher_root(tmp_path_factory, smoke_params) -> Path:
    """An output root with the smoke teachers of RTE (every seed) trained once per session, caches written."""
    from alpkd import teachers

    root = tmp_path_factory.mktemp("teacher_root")
    teachers.train_teachers(smoke_params, TASK, root=root)
    return root
