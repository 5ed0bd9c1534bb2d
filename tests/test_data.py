"""Bad data is named before training starts; a user's own task loads like GLUE."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from alpkd import config, data, data_checks
from alpkd.paths import Run
from alpkd.tasks import GLUE_TASKS

GLUE = Path(__file__).resolve().parents[2] / "shared" / "glue"
ROOT = Path(__file__).resolve().parents[1]
needs_glue = pytest.mark.skipif(not (GLUE / "rte").is_dir(), reason="needs ../shared/glue")


def _local_glue(tmp_path: Path, frame: pd.DataFrame, split: str = "train") -> Path:
    """A copy of ../shared/glue/rte with one split replaced by `frame`."""
    folder = tmp_path / "glue" / "rte"
    shutil.copytree(GLUE / "rte", folder)
    for f in folder.glob(f"{split}-*"):
        f.unlink()
    frame.to_parquet(folder / f"{split}-00000-of-00001.parquet")
    return tmp_path / "glue"


def _rte_frame(n: int = 8) -> pd.DataFrame:
    return pd.DataFrame({"sentence1": [f"premise {i}" for i in range(n)], "sentence2": [f"hyp {i}" for i in range(n)],
                         "label": [i % 2 for i in range(n)], "idx": list(range(n))})


@needs_glue
def test_missing_task_folder_is_named(tmp_path, monkeypatch):
    (tmp_path / "glue").mkdir()
    monkeypatch.setenv(data.GLUE_ENV, str(tmp_path / "glue"))
    with pytest.raises(data.DataError, match=r"no folder .*glue/rte.*ALPKD_GLUE_DIR"):
        data.load_task(GLUE_TASKS["rte"])


@needs_glue
def test_missing_split_is_named(tmp_path, monkeypatch):
    root = _local_glue(tmp_path, _rte_frame())
    for f in (root / "rte").glob("validation-*"):
        f.unlink()
    monkeypatch.setenv(data.GLUE_ENV, str(root))
    with pytest.raises(data.DataError, match=r"validation-\*\.parquet.*'validation'"):
        data.load_task(GLUE_TASKS["rte"])


@needs_glue
@pytest.mark.parametrize(
    "change, pattern",
    [
        (lambda f: f.rename(columns={"sentence2": "hypothesis"}), r"column\(s\) \['sentence2'\] missing"),
        (lambda f: f.assign(label=[0, 1, 2, 0, 1, 0, 1, 0]), r"row 2, column 'label': label 2; expected an integer in 0..1"),
        (lambda f: f.assign(label=[0, 1, -1, 0, 1, 0, 1, 0]), r"row 2, column 'label': label -1"),
        (lambda f: f.assign(sentence1=["a", "b", "c", "  ", "e", "f", "g", "h"]), r"row 3, column 'sentence1': empty"),
    ],
)
def test_bad_training_file_is_named(tmp_path, monkeypatch, change, pattern):
    root = _local_glue(tmp_path, change(_rte_frame()))
    monkeypatch.setenv(data.GLUE_ENV, str(root))
    with pytest.raises(data.DataError, match=pattern) as err:
        data.load_task(GLUE_TASKS["rte"])
    assert "rte/train-" in str(err.value)  # the file is named


def test_bad_regression_label_is_named(tmp_path):
    task = GLUE_TASKS["stsb"]
    from datasets import Dataset

    ds = Dataset.from_dict({"sentence1": ["a", "b"], "sentence2": ["c", "d"], "label": [1.0, float("nan")]})
    with pytest.raises(data.DataError, match=r"f\.csv: row 1, column 'label'.*finite number"):
        data.check_split(ds, task, "f.csv")


def _custom_params(tmp_path: Path, train: str, validation: str, **task) -> config.Params:
    raw = yaml.safe_load((ROOT / "profiles" / "smoke.yaml").read_text())
    raw["custom_tasks"] = {"reviews": {"train": train, "validation": validation, "text_columns": ["text"],
                                       "num_labels": 2, "metrics": ["accuracy", "f1"], **task}}
    raw["data"]["tasks"] = ["reviews"]
    return config.validate(raw)


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl"])
def test_custom_task_files_load(tmp_path, suffix):
    frame = pd.DataFrame({"text": [f"review number {i}" for i in range(10)], "label": [i % 2 for i in range(10)]})
    for split in ("train", "dev"):
        path = tmp_path / f"{split}{suffix}"
        if suffix == ".csv":
            frame.to_csv(path, index=False)
        elif suffix == ".tsv":
            frame.to_csv(path, sep="\t", index=False)
        else:
            path.write_text("".join(json.dumps(r) + "\n" for r in frame.to_dict("records")))
    params = _custom_params(tmp_path, str(tmp_path / f"train{suffix}"), str(tmp_path / f"dev{suffix}"))
    task = params.task("reviews")
    assert task.headline == "accuracy" and task.metrics == ("accuracy", "f1")
    raw = data.load_task(task)
    assert raw["train"]["text"] == frame["text"].tolist()
    assert raw["validation"]["label"] == frame["label"].tolist()


def test_custom_task_bad_declarations(tmp_path):
    with pytest.raises(config.ConfigError, match=r"custom_tasks.reviews.metrics.*regression"):
        _custom_params(tmp_path, "a.csv", "b.csv", num_labels=1)
    with pytest.raises(config.ConfigError, match=r"data.tasks.0 = 'reviews': unknown task"):
        raw = yaml.safe_load((ROOT / "profiles" / "smoke.yaml").read_text())
        raw["data"]["tasks"] = ["reviews"]
        config.validate(raw)
    params = _custom_params(tmp_path, str(tmp_path / "nope.csv"), str(tmp_path / "nope.csv"))
    with pytest.raises(data.DataError, match=r"train file .*nope.csv: not found"):
        data.load_task(params.task("reviews"))
    params = _custom_params(tmp_path, str(tmp_path / "x.xlsx"), str(tmp_path / "x.xlsx"))
    with pytest.raises(data.DataError, match=r"unsupported type '.xlsx'; allowed: .csv, .tsv, .jsonl"):
        data.load_task(params.task("reviews"))


@pytest.mark.slow
def test_custom_task_end_to_end(tmp_path):
    """A user's own TSV task goes through teacher, cache and ALP distillation like a GLUE task."""
    import numpy as np

    from alpkd import distill, teachers
    from alpkd.paths import Layout

    rng = np.random.default_rng(0)
    words = ["good", "great", "fine", "bad", "awful", "poor"]
    for split, n in (("train", 40), ("dev", 16)):
        labels = rng.integers(0, 2, n)
        text = [" ".join(rng.choice(words[:3] if y else words[3:], 4)) for y in labels]
        pd.DataFrame({"text": text, "label": labels}).to_csv(tmp_path / f"{split}.tsv", sep="\t", index=False)
    params = _custom_params(tmp_path, str(tmp_path / "train.tsv"), str(tmp_path / "dev.tsv"),
                            metrics=["f1", "accuracy"])
    out = tmp_path / "out"
    teacher = teachers.train_teacher(params, "reviews", out)
    student = distill.distill_student(params, "reviews", 1, "alp", 42, out)
    layout = Layout(out)
    for record in (teacher, student):
        assert record["task"] == "reviews" and record["headline"] == "f1"
        assert set(record["metrics"]) == {"f1", "accuracy"}
        assert record["score"] == record["metrics"]["f1"]
    assert student["teacher_cached"] is True
    assert json.loads(layout.student_metrics(Run("reviews", 1, "alp", 42)).read_text())["score"] == student["score"]
    assert (layout.cache("reviews", 42) / "validation" / "meta.json").exists()
    predictions = json.loads(layout.predictions(Run("reviews", 1, "alp", 42)).read_text())["validation"]
    assert len(predictions["predictions"]) == 16


# --- issue 10: files are read line for line, and errors name the real line ---------------------------------
def _reviews_task(tmp_path: Path, body: str, suffix: str):
    path = tmp_path / f"train{suffix}"
    path.write_text(body)
    return _custom_params(tmp_path, str(path), str(path)).task("reviews")


def test_tsv_text_starting_with_a_quote_keeps_every_line(tmp_path):
    """A TSV text beginning with `"` (never closed) was read with CSV quoting: 11 lines became one text."""
    texts = [f"review number {i}" for i in range(47)]
    texts[5] = '"so-called great film'
    texts[16] = 'a "quoted" word'
    body = "text\tlabel\n" + "".join(f"{t}\t{i % 2}\n" for i, t in enumerate(texts))
    raw = data.load_task(_reviews_task(tmp_path, body, ".tsv"))
    assert raw["train"]["text"] == texts  # 48 lines: a header and 47 examples
    assert raw["train"]["label"] == [i % 2 for i in range(47)]


def test_csv_unclosed_quote_is_named(tmp_path):
    rows = [f"review {i},{i % 2}" for i in range(20)]
    rows[4] = '"unclosed review,0'
    rows[15] = '"closed" review,1'
    with pytest.raises(data.DataError, match=r"train\.csv: line 6: a quoted field runs on .*line 1 is the header"):
        data.load_task(_reviews_task(tmp_path, "text,label\n" + "\n".join(rows) + "\n", ".csv"))


def test_example_count_must_match_data_lines(tmp_path):
    """Whatever merges or drops lines, a count that differs from the file's data lines is an error."""
    from datasets import Dataset

    path = tmp_path / "t.tsv"
    path.write_text("text\tlabel\na\t1\nb\t0\nc\t1\n")
    task = _reviews_task(tmp_path, "text\tlabel\na\t1\n", ".tsv")
    merged = Dataset.from_dict({"text": ["a", "b\nc"], "label": [1, 0]})
    with pytest.raises(data.DataError, match=r"3 data lines .* but 2 examples read; .*example 2 at line 3"):
        data_checks._check_count(merged, task, str(path), *data_checks._record_lines(path, ".tsv"))


@pytest.mark.parametrize("labels, line, shown", [
    (["1", "0", "1", "0.5", "0"], 5, r"label 0\.5;"),
    (["1", "0", "", "1", "0"], 4, r"label \(blank\);"),
    (["1", "0", "1", "2", "0"], 5, r"label 2;"),
])
def test_bad_csv_label_names_its_own_line(tmp_path, labels, line, shown):
    """One fractional or blank label makes the column floats: the message names that line, not row 0."""
    body = "text,label\n" + "".join(f"review {i},{y}\n" for i, y in enumerate(labels))
    with pytest.raises(data.DataError, match=rf"train\.csv: line {line}, column 'label': {shown} expected an "
                                             r"integer in 0\.\.1 \[lines count from 1; line 1 is the header\]"):
        data.load_task(_reviews_task(tmp_path, body, ".csv"))


def test_bad_jsonl_label_names_its_line(tmp_path):
    body = '{"text": "a", "label": 1}\n\n{"text": "b", "label": 0.5}\n'
    with pytest.raises(data.DataError, match=r"line 3, column 'label': label 0\.5; .*\[lines count from 1\]"):
        data.load_task(_reviews_task(tmp_path, body, ".jsonl"))


def test_unreadable_file_names_the_cause(tmp_path):
    body = "text\tlabel\na\t1\nb\t0\textra\n"
    # found by the line-by-line read before the parser runs (issue 18), so the line is the file's own
    with pytest.raises(data.DataError, match=r"train\.tsv: line 3: 3 fields, the header \(line 1\) has 2"):
        data.load_task(_reviews_task(tmp_path, body, ".tsv"))


class _Stop(Exception):
    pass


def _checkpoint_folder(monkeypatch, params, task: str, root: Path) -> str:
    """The checkpoint folder `train_teacher` would resume from (training itself is stopped at once), after the
    data stage copied the task's current source to `root/data/<task>/`."""
    from alpkd import teachers

    data.write_task_data(params.task(task), root)

    seen = []

    def stop(trainer):
        seen.append(Path(trainer.args.output_dir).name)
        raise _Stop

    monkeypatch.setattr(teachers, "train", stop)
    with pytest.raises(_Stop):
        teachers.train_teacher(params, task, root)
    return seen[0]


def test_checkpoint_key_covers_a_custom_tasks_data_and_declaration(tmp_path, monkeypatch):
    """A teacher killed after a checkpoint must not resume from it once its training file is corrected."""
    texts = [f"review number {i}" for i in range(12)]
    train, dev = tmp_path / "train.tsv", tmp_path / "dev.tsv"
    dev.write_text("text\tlabel\n" + "".join(f"{t}\t{i % 2}\n" for i, t in enumerate(texts)))

    def key(labels, **decl):
        train.write_text("text\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in zip(texts, labels)))
        return _checkpoint_folder(monkeypatch, _custom_params(tmp_path, str(train), str(dev), **decl), "reviews",
                                  tmp_path / "out")

    labels = [i % 2 for i in range(12)]
    first = key(labels)
    assert key(labels) == first  # same data, same declaration: the checkpoint is resumed
    assert key([1 - labels[0], *labels[1:]]) != first  # one label corrected
    assert key(labels, metrics=["f1", "accuracy"]) != first  # the declaration changed


@needs_glue
def test_checkpoint_key_covers_a_glue_folders_data(tmp_path, monkeypatch, smoke_params):
    keys = []
    for labels in ([i % 2 for i in range(8)], [1 - i % 2 for i in range(8)]):
        root = _local_glue(tmp_path / str(len(keys)), _rte_frame().assign(label=labels))
        monkeypatch.setenv(data.GLUE_ENV, str(root))
        keys.append(_checkpoint_folder(monkeypatch, smoke_params, "rte", tmp_path / "out"))
    assert keys[0] != keys[1]


def test_fingerprint_is_content_only():
    from datasets import Dataset, concatenate_datasets

    rows = {"input_ids": [[1, 2], [3], [4, 5, 6]], "labels": [0, 1, 0], "text": ["a", "b", None]}
    one = Dataset.from_dict(rows)
    chunked = concatenate_datasets([one.select([0]), one.select([1, 2])])
    assert data.fingerprint(one) == data.fingerprint(chunked)
    assert data.fingerprint(one) != data.fingerprint(Dataset.from_dict({**rows, "labels": [0, 1, 1]}))
    assert data.fingerprint(one) != data.fingerprint(Dataset.from_dict({**rows, "input_ids": [[1], [2, 3], [4, 5, 6]]}))


def test_next_teacher_run_removes_what_a_kill_during_a_save_left(tmp_path, monkeypatch, smoke_params):
    """`.teacher.tmp-<pid>` of a dead process goes on the next run of the stage; a live writer's stays."""
    import subprocess
    import sys

    from alpkd.paths import Layout

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        layout = Layout(tmp_path / "out")
        teacher = layout.teacher_model("rte", 42)
        stale = [teacher.with_name(f".s42.tmp-{dead_pid}"), layout.cache("rte", 42) / f".train.tmp-{dead_pid}"]
        for folder in stale:
            folder.mkdir(parents=True)
            (folder / "model.safetensors").write_bytes(b"half")
        stale_file = layout.teacher_metrics("rte", 42).with_name(f".s42.json.tmp-{dead_pid}")
        stale_file.parent.mkdir(parents=True)
        stale_file.write_text("{")
        in_progress = teacher.with_name(f".s42.tmp-{live.pid}")
        in_progress.mkdir()
        other = teacher.with_name(f".other.tmp-{dead_pid}")  # not this stage's
        other.mkdir()
        _checkpoint_folder(monkeypatch, smoke_params, "rte", tmp_path / "out")
        assert not any(p.exists() for p in [*stale, stale_file])
        assert in_progress.is_dir() and other.is_dir()
    finally:
        live.kill()
        live.wait()


def test_stale_temporaries_beside_a_students_outputs(tmp_path):
    import subprocess
    import sys

    from alpkd.paths import Layout, Run, remove_stale_temporaries

    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    layout, run = Layout(tmp_path), Run("my_task", 2, "alp", 7)
    model, metrics = layout.student_model(run), layout.student_metrics(run)
    left = [model.with_name(f".{model.name}.tmp-{dead}"), metrics.with_name(f".{metrics.name}.tmp-{dead}")]
    left[0].mkdir(parents=True)
    left[1].parent.mkdir(parents=True)
    left[1].write_text("{")
    neighbour = metrics.with_name(f".s8.json.tmp-{dead}")  # another seed's: not this run's
    neighbour.write_text("{")
    assert sorted(remove_stale_temporaries(layout.student_outputs(run))) == sorted(left)
    assert neighbour.exists() and not any(p.exists() for p in left)


# --- the data stage: data/<task>/<split>.parquet, what every later step reads
@needs_glue
def test_data_stage_copies_every_row_exactly(tmp_path):
    from helpers import glue_frame

    task = GLUE_TASKS["rte"]
    folder = data.write_task_data(task, tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == ["task.json", "train.parquet", "validation.parquet"]
    assert json.loads((folder / "task.json").read_text()) == {  # written by hand from tasks.py's RTE line
        "name": "rte", "text_columns": ["sentence1", "sentence2"], "num_labels": 2, "metrics": ["accuracy"],
        "headline": "accuracy", "validation_splits": ["validation"], "label_column": "label"}
    source = data.load_task(task)
    stored = data.read_task_data(task, tmp_path)
    record = json.loads((tmp_path / "data" / "rte.source.json").read_text())
    assert record["source"] == data.source_label(task) == data.stored_source("rte", tmp_path)
    for split in ("train", "validation"):
        assert stored[split].features == source[split].features  # ClassLabel and dtypes survive the file
        pd.testing.assert_frame_equal(stored[split].to_pandas(), glue_frame("rte", split))  # every row, in order
        assert record["splits"][split] == {"rows": len(source[split]), "fingerprint": data.fingerprint(source[split])}
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    data.write_task_data(task, tmp_path)  # the same source writes the same bytes (dvc.lock's hash stays)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert not list((tmp_path / "data").glob(".*.tmp-*"))


@needs_glue
def test_later_steps_read_the_stored_copy_not_the_source(tmp_path, monkeypatch):
    task = GLUE_TASKS["rte"]
    data.write_task_data(task, tmp_path)
    monkeypatch.setenv(data.GLUE_ENV, str(tmp_path / "nowhere"))
    assert len(data.read_task_data(task, tmp_path)["validation"]) == 277
    assert data.stored_source("rte", tmp_path) == "ALPKD_GLUE_DIR (a local copy of nyu-mll/glue)"


def test_missing_source_is_one_clear_error(tmp_path, monkeypatch):
    (tmp_path / "glue").mkdir()
    monkeypatch.setenv(data.GLUE_ENV, str(tmp_path / "glue"))
    message = str(pytest.raises(data.DataError, data.read_task_data, GLUE_TASKS["rte"], tmp_path / "out").value)
    for part in ("'rte'", str(tmp_path / "out" / "data" / "rte"), str(tmp_path / "glue" / "rte"), "set ALPKD_GLUE_DIR",
                 data.GLUE_HUB):
        assert part in message, message
    assert not (tmp_path / "out" / "data" / "rte").exists()
    monkeypatch.delenv(data.GLUE_ENV)  # the hub, offline (tests/helpers.py): tried and named
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    message = str(pytest.raises(data.DataError, data.read_task_data, GLUE_TASKS["rte"], tmp_path / "out").value)
    assert "'rte'" in message and f"the hub dataset {data.GLUE_HUB}" in message and "Set ALPKD_GLUE_DIR" in message


def test_custom_task_copy_round_trips_and_a_changed_file_is_named(tmp_path):
    frame = pd.DataFrame({"text": [f"review {i}" for i in range(10)], "label": [i % 2 for i in range(10)]})
    frame.to_csv(tmp_path / "train.csv", index=False)
    frame.to_csv(tmp_path / "dev.csv", index=False)
    task = _custom_params(tmp_path, str(tmp_path / "train.csv"), str(tmp_path / "dev.csv")).task("reviews")
    stored = data.read_task_data(task, tmp_path / "out")  # written first: the copy was missing
    pd.testing.assert_frame_equal(stored["train"].to_pandas(), frame)
    assert data.stored_source("reviews", tmp_path / "out") == "custom files (custom_tasks.reviews)"
    frame.assign(label=1 - frame["label"]).to_csv(tmp_path / "train.csv", index=False)
    with pytest.raises(data.DataError, match=r"'reviews': .*out/data/reviews/ is a copy of its files before they "
                                             r"changed.*data --task reviews"):
        data.read_task_data(task, tmp_path / "out")
    data.write_task_data(task, tmp_path / "out")
    assert data.read_task_data(task, tmp_path / "out")["train"]["label"] == (1 - frame["label"]).tolist()


def test_a_changed_declaration_is_named_and_its_path_is_not_part_of_it(tmp_path):
    frame = pd.DataFrame({"text": [f"review {i}" for i in range(10)], "label": [i % 2 for i in range(10)]})
    frame.to_csv(tmp_path / "train.csv", index=False)
    frame.to_csv(tmp_path / "dev.csv", index=False)
    params = _custom_params(tmp_path, str(tmp_path / "train.csv"), str(tmp_path / "dev.csv"))
    data.write_task_data(params.task("reviews"), tmp_path / "out")
    stored = json.loads((tmp_path / "out" / "data" / "reviews" / "task.json").read_text())
    assert "files" not in stored and stored["metrics"] == ["accuracy", "f1"]  # where the files are changes no output
    raw = params.model_dump()
    raw["custom_tasks"]["reviews"]["metrics"] = ["f1", "accuracy"]  # the headline becomes f1
    changed = config.validate(raw).task("reviews")
    with pytest.raises(data.DataError, match=r"'reviews': .*another declaration of the task \(changed: "
                                             r"headline, metrics\).*data --task reviews"):
        data.read_task_data(changed, tmp_path / "out")
    data.write_task_data(changed, tmp_path / "out")
    assert len(data.read_task_data(changed, tmp_path / "out")["train"]) == 10


def test_custom_files_may_not_be_in_the_data_stages_folder(tmp_path):
    with pytest.raises(config.ConfigError, match=r"custom_tasks.reviews.train = 'data/reviews/t.csv'.*custom/"):
        _custom_params(tmp_path, "data/reviews/t.csv", "custom/v.csv")
