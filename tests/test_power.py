"""alpkd.power: variance components recovered from simulated tables; the design prediction against simulation;
the `significance` and `power` commands on a hand-written run."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from helpers import REPO
from test_report import params, root  # noqa: F401 - the hand-written run and its params

from alpkd.power import COMPONENTS, components, predicted
from alpkd.significance import crossed_gap


def _table(rng, sd, T, n, N):
    a, b, g, ag, e = sd
    return (a * rng.standard_normal((T, 1, 1)) + b * rng.standard_normal((T, n, 1)) + g * rng.standard_normal((1, 1, N))
            + ag * rng.standard_normal((T, 1, N)) + e * rng.standard_normal((T, n, N)))


def test_components_are_unbiased():
    rng = np.random.default_rng(0)
    sd = (0.8, 0.6, 0.5, 0.7, 1.2)
    est = np.mean([[components(_table(rng, sd, 6, 3, 80))[k] for k in COMPONENTS] for _ in range(400)], axis=0)
    np.testing.assert_allclose(est, np.square(sd), rtol=0.12)


def test_predicted_variance_is_the_simulated_variance_of_the_mean():
    rng = np.random.default_rng(1)
    sd = (0.5, 0.4, 0.3, 0.6, 2.0)
    comp = dict(zip(COMPONENTS, np.square(sd)))
    means = [_table(rng, sd, 8, 1, 100).mean() for _ in range(4000)]
    var, df, half = predicted(comp, 8, 1, 100)
    assert np.var(means) == pytest.approx(var, rel=0.08)
    # and what crossed_gap estimates from one run, on average
    est = np.mean([crossed_gap(_table(rng, sd, 8, 1, 100)).variance for _ in range(2000)])
    assert est == pytest.approx(var, rel=0.08)
    assert 7 <= df <= 100


def test_more_teachers_narrow_the_interval_down_to_the_sentence_floor():
    comp = dict(zip(COMPONENTS, (1.0, 0.0, 0.5, 50.0, 0.0)))
    halves = [predicted(comp, T, 1, 872)[2] for T in (3, 10, 100, 10 ** 7)]
    assert halves == sorted(halves, reverse=True)
    assert halves[-1] == pytest.approx(1.96 * np.sqrt(0.5 / 872), rel=0.02)


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "alpkd", *args], cwd=cwd, capture_output=True, text=True)


def test_significance_command_prints_the_report_csv_byte_for_byte(params, root):  # noqa: F811
    import yaml

    from alpkd import report

    report.write_report(params, root)
    (root / "params.yaml").write_text(yaml.safe_dump(params.model_dump(mode="json")))
    out = _cli("--params", str(root / "params.yaml"), "--out", str(root), "significance", cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout == (root / "report" / "significance.csv").read_text()
    power = _cli("--params", str(root / "params.yaml"), "--out", str(root), "power", cwd=REPO)
    assert power.returncode == 0, power.stderr
    assert "T=22" in power.stdout and "teacher x sentence" in power.stdout


def test_statistics_commands_name_a_missing_run(tmp_path, params):  # noqa: F811
    import yaml

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params.model_dump(mode="json")))
    out = _cli("--params", str(tmp_path / "params.yaml"), "--out", str(tmp_path), "significance", cwd=REPO)
    assert out.returncode == 1 and out.stderr.startswith("error: significance: no student records")
