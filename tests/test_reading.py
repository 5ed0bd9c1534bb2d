"""Issue 37: every value read as the user wrote it, every file problem named.

Parameters are read with the YAML version DVC reads params.yaml with (YAML 1.2, ruamel.yaml), so the library and
DVC's tracked parameters never disagree; what then has the wrong type is one line naming key, text and readings.
"""
from __future__ import annotations

import dataclasses
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


# --- data files: values read as written, limits named, file-system faults named ---------------------------------

def _task(tmp_path: Path, body: str | None, suffix: str = ".csv", num_labels: int = 2, name: str = "reviews",
          columns: tuple[str, ...] = ("text",)):
    """A custom task whose training and validation file is `train<suffix>` holding `body` (None: not written)."""
    raw = yaml.safe_load(SMOKE_TEXT)
    path = tmp_path / f"train{suffix}"
    if body is not None:
        path.write_text(body)
    metrics = ["pearson"] if num_labels == 1 else ["accuracy"]
    raw["custom_tasks"] = {name: {"train": str(path), "validation": str(path), "text_columns": list(columns),
                                  "num_labels": num_labels, "metrics": metrics}}
    raw["data"]["tasks"] = [name]
    return config.validate(raw).task(name)


@pytest.mark.parametrize("suffix, sep", [(".csv", ","), (".tsv", "\t")])
@pytest.mark.parametrize("bad", ["nan", "NaN", "inf", "-inf", "Infinity"])
def test_non_finite_regression_target_is_named_at_its_line(tmp_path, suffix, sep, bad):
    from alpkd import data

    body = f"text{sep}label\n" + "".join(f"t{i}{sep}{y}\n" for i, y in enumerate(["1.5", "2", "0.25", bad, "3"]))
    message = str(pytest.raises(data.DataError, data.load_task, _task(tmp_path, body, suffix, 1)).value)
    assert f"line 5, column 'label': label {bad!r} is not a finite number" in message, message


def test_non_finite_regression_target_in_json_lines_is_named(tmp_path):
    from alpkd import data

    body = '{"text": "a", "label": 1.5}\n{"text": "b", "label": 2}\n{"text": "c", "label": NaN}\n'
    message = str(pytest.raises(data.DataError, data.load_task, _task(tmp_path, body, ".jsonl", 1)).value)
    assert "line 3, column 'label': label nan is not a finite number" in message, message


def test_whole_number_regression_targets_are_floats(tmp_path):
    from alpkd import data

    body = "text,label\n" + "".join(f"t{i},{i % 5}\n" for i in range(10))
    raw = data.load_task(_task(tmp_path, body, ".csv", 1))
    assert raw["train"].features["label"].dtype in ("float32", "float64"), raw["train"].features
    assert raw["train"]["label"] == [float(i % 5) for i in range(10)]


@pytest.mark.parametrize("suffix, sep", [(".csv", ","), (".tsv", "\t")])
def test_texts_that_look_like_numbers_stay_texts(tmp_path, suffix, sep):
    from alpkd import data

    # a column of numbers alone (pandas made it floats: 7.0, then "empty or missing text"), and a mixed one
    for texts in (["007", "1", "2.50", "1e5", "-0", "12", "+3"], ["1", "True", "nan", "NA", "null", "0x1A", "1_000"]):
        body = f"text{sep}label\n" + "".join(f"{t}{sep}{i % 2}\n" for i, t in enumerate(texts))
        raw = data.load_task(_task(tmp_path, body, suffix))
        assert raw["train"]["text"] == texts


def test_pair_texts_that_look_like_numbers_stay_texts(tmp_path):
    from alpkd import data

    body = "a,b,label\n1,2,0\n3,4.0,1\n5,06,0\n"
    raw = data.load_task(_task(tmp_path, body, ".csv", columns=("a", "b")))
    assert raw["train"]["a"] == ["1", "3", "5"] and raw["train"]["b"] == ["2", "4.0", "06"]


def test_json_number_where_a_text_belongs_is_named(tmp_path):
    from alpkd import data

    body = '{"text": "a", "label": 1}\n{"text": "b", "label": 0}\n{"text": 5, "label": 0}\n'
    message = str(pytest.raises(data.DataError, data.load_task, _task(tmp_path, body, ".jsonl")).value)
    assert "line 3, column 'text'" in message and "not a text" in message, message


@pytest.mark.parametrize("labels", [["1.0", "0.0", "1.0"], ["1", "0.0", "1"]])
def test_labels_written_as_decimals_are_refused_at_their_line(tmp_path, labels):
    """The label set of a classification task is the integers 0..k-1, written as such."""
    from alpkd import data

    body = "text,label\n" + "".join(f"t{i},{y}\n" for i, y in enumerate(labels))
    message = str(pytest.raises(data.DataError, data.load_task, _task(tmp_path, body)).value)
    line = 2 + next(i for i, y in enumerate(labels) if "." in y)
    assert f"line {line}, column 'label'" in message and "decimal" in message, message


def test_csv_field_longer_than_pythons_csv_limit_is_read_whole(tmp_path):
    import csv

    from alpkd import data

    long = "word " * (csv.field_size_limit() // 5 + 100)
    body = f'text,label\n"{long}",1\nshort,0\n'
    raw = data.load_task(_task(tmp_path, body))
    assert raw["train"]["text"] == [long, "short"]
    assert csv.field_size_limit() == 131072  # the process's own limit is left as it was


def test_long_task_name_is_refused_naming_the_limit():
    raw = yaml.safe_load(SMOKE_TEXT)
    name = "t" * 300
    raw["custom_tasks"] = {name: {"train": "custom/a.csv", "validation": "custom/a.csv", "text_columns": ["text"],
                                  "num_labels": 2, "metrics": ["accuracy"]}}
    raw["data"]["tasks"] = [name]
    message = str(pytest.raises(ConfigError, config.validate, raw).value)
    assert "300 characters" in message and "255 bytes" in message and "at most" in message, message


def test_task_name_at_the_limit_makes_every_path(tmp_path):
    """The longest allowed name still makes every file name the steps write (each under 255 bytes)."""
    from alpkd.paths import Layout, run_name

    name = "t" * config.TASK_NAME_MAX
    layout = Layout(tmp_path)
    for path in [layout.data_source(name), layout.teacher_predictions(name, 2**32 - 1),
                 tmp_path / f".{run_name(name, 99, 'all_to_one', 2**32 - 1)}.tmp-4194304"]:
        assert all(len(part.encode()) <= 255 for part in path.parts), path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")


def _link_cases(folder: Path) -> dict[str, tuple[Path, str]]:
    """Each file-system fault where a file belongs, made in `folder`: (its path, what the message must say)."""
    folder.mkdir(parents=True, exist_ok=True)
    self_link = folder / "self.csv"
    self_link.symlink_to("self.csv")
    (folder / "a.csv").symlink_to("b.csv")
    (folder / "b.csv").symlink_to("a.csv")
    (folder / "dangling.csv").symlink_to("gone.csv")
    (folder / "dir.csv").mkdir()
    os.mkfifo(folder / "fifo.csv")
    return {"self": (self_link, "a symbolic link to itself"), "loop": (folder / "a.csv", "a symbolic link in a loop"),
            "dangling": (folder / "dangling.csv", "a dangling symbolic link (to gone.csv"),
            "folder": (folder / "dir.csv", "a folder, not a regular file"),
            "fifo": (folder / "fifo.csv", "a named pipe (FIFO), not a regular file")}


@pytest.mark.parametrize("case", ["self", "loop", "dangling", "folder", "fifo"])
def test_data_file_fault_is_named(tmp_path, case):
    from alpkd import data

    path, what = _link_cases(tmp_path / "files")[case]
    task = dataclasses.replace(_task(tmp_path, None), files=(("train", str(path)), ("validation", str(path))))
    message = str(pytest.raises(data.DataError, data.load_task, task).value)
    assert str(path) in message and what in message and "expected" in message, message
    assert "not found" not in message, message


@pytest.mark.parametrize("case", ["self", "loop", "dangling", "folder", "fifo"])
def test_params_file_fault_is_named(tmp_path, case):
    path, what = _link_cases(tmp_path / "files")[case]
    line = one_line_error(run_cli("--params", str(path), "check", cwd=tmp_path), 2)
    assert str(path) in line and what in line and "expected a YAML file" in line, line

# an unreadable params or data file: tests/test_faults.py::test_unreadable_params_and_custom_files_are_one_line


# --- model files: the label check reads every weights layout; a model folder's faults named -------------------

def _teacher_files(folder: Path, outputs: int, layout: str) -> Path:
    """A folder with a tokenizer and weights whose classifier has `outputs` rows, saved as `layout`:
    safetensors, sharded safetensors, .bin or sharded .bin."""
    import json

    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("[PAD]\n[UNK]\n")
    (folder / "config.json").write_text(json.dumps({"num_hidden_layers": 2, "max_position_embeddings": 512}))
    parts = [{"bert.embeddings.weight": torch.zeros(3, 4)},
             {"classifier.weight": torch.ones(outputs, 4), "classifier.bias": torch.zeros(outputs)}]
    if layout == "safetensors":
        save_file({**parts[0], **parts[1]}, str(folder / "model.safetensors"))
    elif layout == "bin":
        torch.save({**parts[0], **parts[1]}, folder / "pytorch_model.bin")
    else:
        suffix = "safetensors" if layout == "sharded-safetensors" else "bin"
        names = [f"model-0000{k + 1}-of-00002.{suffix}" for k in range(2)]
        for name, part in zip(names, parts):
            save_file(part, str(folder / name)) if suffix == "safetensors" else torch.save(part, folder / name)
        index = "model.safetensors.index.json" if suffix == "safetensors" else "pytorch_model.bin.index.json"
        weight_map = {k: name for name, part in zip(names, parts) for k in part}
        (folder / index).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return folder


LAYOUTS = ["safetensors", "sharded-safetensors", "bin", "sharded-bin"]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_label_check_reads_every_weights_layout(tmp_path, layout):
    from alpkd.model_files import teacher_folder_problem

    folder = _teacher_files(tmp_path / "teacher", 3, layout)
    problem = teacher_folder_problem(folder, {"rte": 2})
    assert problem and "classifier of 3 output(s)" in problem and "task 'rte' has 2 label(s)" in problem, problem
    assert teacher_folder_problem(folder, {"mnli": 3}) is None


def test_bin_reading_runs_no_code_of_the_file(tmp_path):
    """A .bin file is a pickle: the label check reads shapes without running what the pickle asks for."""
    import pickle
    import zipfile

    from alpkd.model_files import teacher_folder_problem

    class Boom:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'ran'}",))

    folder = _teacher_files(tmp_path / "teacher", 3, "safetensors")
    (folder / "model.safetensors").unlink()
    with zipfile.ZipFile(folder / "pytorch_model.bin", "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"classifier.weight": Boom()}))
    teacher_folder_problem(folder, {"rte": 2})
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize("case", ["self", "loop", "dangling", "folder", "fifo"])
@pytest.mark.parametrize("name", ["config.json", "model.safetensors", "vocab.txt"])
def test_model_file_fault_is_named(tmp_path, case, name):
    from alpkd.model_files import teacher_folder_problem

    folder = _teacher_files(tmp_path / "teacher", 2, "safetensors")
    path, what = _link_cases(tmp_path / "files")[case]
    (folder / name).unlink()
    if path.is_symlink():
        (folder / name).symlink_to(os.readlink(path) if case != "loop" else path)
        if case == "self":
            (folder / name).unlink()
            (folder / name).symlink_to(name)
    elif case == "folder":
        (folder / name).mkdir()
    else:
        os.mkfifo(folder / name)
    problem = teacher_folder_problem(folder, {"rte": 2})
    assert problem and f"{folder / name}:" in problem and what.split(" (to")[0] in problem, problem


@pytest.mark.parametrize("case", ["file", "dangling", "self"])
def test_teacher_model_path_that_is_no_folder_is_named(tmp_path, case):
    params = tmp_path / "params.yaml"
    model = tmp_path / "teacher"
    if case == "file":
        model.write_text("x")
    elif case == "dangling":
        model.symlink_to("gone")
    else:
        model.symlink_to("teacher")
    params.write_text(SMOKE_TEXT.replace("  model: tiny\n", f"  model: {model}\n"))
    line = one_line_error(run_cli("--params", str(params), "check", cwd=tmp_path), 2)
    want = {"file": "a file, not a folder", "dangling": "a dangling symbolic link", "self": "a symbolic link to itself"}
    assert f"teacher.model = '{model}'" in line and want[case] in line and "expected a model folder" in line, line


def test_evaluate_names_a_model_folder_that_is_a_dangling_link(tmp_path):
    (tmp_path / "params.yaml").write_text(SMOKE_TEXT)
    (tmp_path / "model").symlink_to("gone")
    line = one_line_error(run_cli("evaluate", "--task", "rte", "--model", str(tmp_path / "model"), cwd=tmp_path), 1)
    assert "a dangling symbolic link" in line and "expected a model folder" in line, line


# --- output piped into a reader that stops (`| head`): one line, exit 128 + SIGPIPE, no traceback --------------

def _closed_pipe_run(args: list[str], cwd: Path):
    """The CLI with its stdout a pipe whose reader has gone (what `| head` leaves once it has its lines)."""
    import subprocess
    import sys

    read, write = os.pipe()
    os.close(read)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    try:
        return subprocess.run([sys.executable, "-m", "alpkd", *args], cwd=cwd, env=env, stdout=write,
                              stderr=subprocess.PIPE, text=True, timeout=300)
    finally:
        os.close(write)


def test_check_into_a_closed_pipe_is_one_line(tmp_path):
    import signal

    (tmp_path / "params.yaml").write_text(SMOKE_TEXT)
    result = _closed_pipe_run(["check"], tmp_path)
    assert result.returncode == 128 + signal.SIGPIPE, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr, result.stderr
    errors = [x for x in result.stderr.splitlines() if x.startswith("error: ")]
    assert len(errors) == 1 and "SIGPIPE" in errors[0] and "| head" in errors[0], result.stderr


def test_a_finished_step_into_a_closed_pipe_says_its_outputs_are_written(tmp_path):
    import signal

    from alpkd.paths import Layout

    (tmp_path / "params.yaml").write_text(SMOKE_TEXT)
    out = tmp_path / "out"
    result = _closed_pipe_run(["--out", str(out), "teacher", "--task", "rte", "--seed", "42"], tmp_path)
    assert result.returncode == 128 + signal.SIGPIPE, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr, result.stderr[-2000:]
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: teacher:") and "SIGPIPE" in line and "outputs are written" in line, line
    assert Layout(out).teacher_metrics("rte", 42).is_file()


@pytest.mark.parametrize("where", ["name", "path"])
def test_data_file_name_longer_than_the_file_system_allows_is_named(tmp_path, where):
    from alpkd import data

    task = _task(tmp_path, None)
    path = tmp_path / ("x" * 300 + ".csv") if where == "name" else tmp_path.joinpath(*["d" * 200] * 25, "a.csv")
    task = dataclasses.replace(task, files=(("train", str(path)), ("validation", str(path))))
    message = str(pytest.raises(data.DataError, data.load_task, task).value)
    limit = "255 bytes per name" if where == "name" else "bytes per path"
    assert "longer than the file system allows" in message and limit in message, message


def test_params_file_name_longer_than_the_file_system_allows_is_named(tmp_path):
    line = one_line_error(run_cli("--params", str(tmp_path / ("p" * 300 + ".yaml")), "check", cwd=tmp_path), 2)
    assert "longer than the file system allows (255 bytes per name)" in line, line


def test_output_root_name_longer_than_the_file_system_allows_is_named(tmp_path):
    (tmp_path / "params.yaml").write_text(SMOKE_TEXT)
    out = tmp_path / ("o" * 300)
    line = one_line_error(run_cli("--out", str(out), "data", "--task", "rte", cwd=tmp_path), 1)
    assert "longer than the file system allows (255 bytes per name)" in line and "output folder" in line, line
