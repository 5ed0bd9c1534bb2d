"""Issue 37: every value read as the user wrote it, every file problem named.

Parameters are read with the YAML version DVC reads params.yaml with (YAML 1.2, ruamel.yaml), so the library and
DVC's tracked parameters never disagree; what then has the wrong type is one line naming key, text and readings.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from alpkd import config
from alpkd.params_file import ConfigError, read_yaml
from tests.helpers import REPO, SMOKE, one_line_error, run_cli

SMOKE_TEXT = SMOKE.read_text()


def _dvc_reading(path: Path):
    """What DVC itself reads from a params file (its own loader)."""
    from dvc.utils.serialize._yaml import load_yaml

    return load_yaml(str(path))


# (YAML text, what YAML 1.1 (PyYAML) reads, what YAML 1.2 (DVC) reads)
FAMILY = [
    ("042", 34, 42), ("0777", 511, 777), ("08", "08", 8), ("0o17", "0o17", 15), ("on", True, "on"),
    ("off", False, "off"), ("yes", True, "yes"), ("no", False, "no"), ("1:30", 90, "1:30"), ("-1:30", -90, "-1:30"),
    ("190:20:30.15", 685230.15, "190:20:30.15"), ("1e-4", "1e-4", 1e-4), ("1E4", "1E4", 1e4), ("+.5", "+.5", 0.5),
    ("1.5e3", "1.5e3", 1500.0), ("0x1A", 26, 26), ("+1", 1, 1), ("1_000", 1000, 1000), ("~", None, None),
    ("Y", "Y", "Y"), ("N", "N", "N"), ("2001-12-14", None, None),
]


@pytest.mark.parametrize("text, yaml11, yaml12", FAMILY, ids=[f[0] for f in FAMILY])
def test_each_scalar_reads_as_dvc_reads_it(tmp_path, text, yaml11, yaml12):
    path = tmp_path / "p.yaml"
    path.write_text(f"value: {text}\nlisted: [{text}]\n")
    ours, dvcs = read_yaml(path), _dvc_reading(path)
    assert ours == dvcs, (text, ours, dvcs)
    assert type(ours["value"]) is type(dvcs["value"])
    if text != "2001-12-14":
        assert ours["value"] == yaml12
        assert yaml.safe_load(f"v: {text}")["v"] == yaml11  # the family: what the old reader took it for


def test_octal_looking_seeds_run_as_written(tmp_path):
    """`distill.seeds: [042, 043]` ran seeds 34 and 35 while DVC tracked 42 and 43."""
    path = tmp_path / "params.yaml"
    path.write_text(SMOKE_TEXT.replace("  seeds: [42, 43]  # student", "  seeds: [042, 043]  # student"))
    assert config.load(path).distill.seeds == [42, 43] == _dvc_reading(path)["distill"]["seeds"]


def test_exponent_without_a_dot_is_a_float(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(SMOKE_TEXT.replace("  learning_rate: 1.0e-3\n", "  learning_rate: 1e-3\n", 1))
    assert config.load(path).teacher.learning_rate == 1e-3 == _dvc_reading(path)["teacher"]["learning_rate"]


@pytest.mark.parametrize("text", ["on", "off", "yes", "no", "'true'"])
def test_a_switch_written_as_a_text_is_refused(tmp_path, text):
    """`alp_scale: on` is the text 'on' to DVC: the library refuses it instead of reading it as true."""
    path = tmp_path / "params.yaml"
    line = next(x for x in SMOKE_TEXT.splitlines() if x.startswith("  alp_scale: "))
    path.write_text(SMOKE_TEXT.replace(line, f"  alp_scale: {text}"))
    message = str(pytest.raises(ConfigError, config.load, path).value)
    shown = text.strip("'")
    assert f"distill.alp_scale = {shown!r}" in message and "true or false" in message, message
    if text != "'true'":
        assert "YAML 1.1" in message and "YAML 1.2" in message, message


@pytest.mark.parametrize("text, reading11", [("1:30", "90"), ("2001-12-14", None)])
def test_wrong_type_after_the_reading_names_key_text_and_readings(tmp_path, text, reading11):
    path = tmp_path / "params.yaml"
    path.write_text(SMOKE_TEXT.replace("  seeds: [42, 43]  # student", f"  seeds: [{text}, 43]  # student"))
    message = str(pytest.raises(ConfigError, config.load, path).value)
    assert "distill.seeds.0" in message and text in message, message
    if reading11:
        assert f"YAML 1.1" in message and reading11 in message and "YAML 1.2" in message, message
    else:
        assert "a date" in message and "quote" in message, message


def test_cli_check_names_a_text_where_a_number_belongs(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(SMOKE_TEXT.replace("  temperature: 5.0\n", "  temperature: 1:30\n"))
    line = one_line_error(run_cli("--params", str(path), "check", cwd=tmp_path), 2)
    assert "distill.temperature = '1:30'" in line and "90" in line, line


def test_yaml_11_directive_is_read_as_dvc_reads_it(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("%YAML 1.1\n---\na: 042\nb: on\n")
    assert read_yaml(path) == _dvc_reading(path)


def test_repeated_key_in_a_flow_mapping_names_its_line(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("a: 1\nb: {c: 1, c: 2}\n")
    message = str(pytest.raises(ConfigError, read_yaml, path).value)
    assert "'c' appears twice" in message and "line 2" in message, message


def test_no_module_reads_yaml_another_way():
    """One reader: no module of the library imports a YAML parser but params_file."""
    for path in (REPO / "alpkd").rglob("*.py"):
        if path.name == "params_file.py":
            continue
        text = path.read_text()
        assert "import yaml" not in text and "ruamel" not in text, path
