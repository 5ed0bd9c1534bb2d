"""alpkd.report counts only records whose content matches their place: a backup copy beside a record, a record of
another profile, one with a missing field or a field of the wrong type is not counted, and is named (results.md
and stderr) with why. Expected numbers computed with numpy from the scores written (tests/test_report.py's grid)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from test_report import expected_cell, params, root, table_rows  # noqa: F401 (fixtures)

STUDENTS = ("metrics", "students")


def _rewrite(root, rel: str, change) -> str:
    path = root.joinpath(*STUDENTS, rel)
    rec = json.loads(path.read_text())
    change(rec)
    path.write_text(json.dumps(rec))
    return "/".join([*STUDENTS, rel])


def _report(params, root, capsys):
    from alpkd import report

    report.write_report(params, root)
    return (root / "report" / "results.md").read_text(), capsys.readouterr().err


def _seeds(root, name: str) -> dict[tuple[int, str, str], int]:
    """{(layers, method, task): n_seeds} of a report CSV."""
    frame = pd.read_csv(root / "report" / name)
    frame = frame[frame["method"] != "teacher"] if "role" not in frame else frame[frame["role"] == "student"]
    return {(int(r.layers), r.method, r.task): int(r.n_seeds) for r in frame.itertuples() if r.task != "average"}


def test_a_backup_copy_beside_a_record_is_not_counted(params, root, capsys):
    src = root.joinpath(*STUDENTS, "rte-2", "kd", "s2.json")
    backup = src.with_name("s2_old.json")
    rec = json.loads(src.read_text())
    backup.write_text(json.dumps({**rec, "score": 0.01}))  # an old result of the same run
    md, err = _report(params, root, capsys)
    name = "metrics/students/rte-2/kd/s2_old.json"
    assert name in md and name in err
    line = next(x for x in md.splitlines() if name in x)
    assert "metrics/students/rte-2/kd/s2.json" in line  # says where its content belongs
    want = expected_cell([root.scores[("rte", 2, "kd", s)] for s in (1, 2, 3)])
    assert table_rows(md)[("2", "KD")][0] == want
    # every table agrees on how many seeds each cell has
    results, intervals = _seeds(root, "results.csv"), _seeds(root, "intervals.csv")
    assert results == intervals
    assert results[(2, "kd", "rte")] == 3


def test_a_record_of_another_profile_is_not_counted(params, root, capsys):
    name = _rewrite(root, "rte-1/alp/s1.json", lambda r: r.update(profile="mini"))
    md, err = _report(params, root, capsys)
    assert name in md and name in err and "`mini`" in md
    want = expected_cell([root.scores[("rte", 1, "alp", s)] for s in (2, 3)])
    assert table_rows(md)[("1", "ALP")][0] == want


def test_records_with_a_missing_or_mistyped_field_are_not_counted(params, root, capsys):
    names = {
        _rewrite(root, "rte-2/alp/s3.json", lambda r: r.update(score=str(r["score"]))): "`score`",
        _rewrite(root, "rte-2/alp_no/s1.json", lambda r: r.update(seed="1")): "`seed`",
        _rewrite(root, "rte-1/kd/s2.json", lambda r: r.pop("score")): "no `score`",
        _rewrite(root, "mrpc-2/kd/s1.json", lambda r: r.update(depth=2.0)): "`depth`",
    }
    md, err = _report(params, root, capsys)
    for name, why in names.items():
        line = next((x for x in md.splitlines() if name in x), "")
        assert why in line.split(name, 1)[1].split(";")[0], (name, line)
        assert name in err
    rows = table_rows(md)
    assert rows[("2", "ALP")][0] == expected_cell([root.scores[("rte", 2, "alp", s)] for s in (1, 2)])
    assert rows[("1", "KD")][0] == expected_cell([root.scores[("rte", 1, "kd", s)] for s in (1, 3)])
    assert rows[("2", "KD")][1] == expected_cell([root.scores[("mrpc", 2, "kd", s)] for s in (2, 3)])
    assert _seeds(root, "results.csv")[(2, "alp_no", "rte")] == 2


def test_a_damaged_file_is_named_and_a_marker_is_not(params, root, capsys):
    marker = root.joinpath(*STUDENTS, "rte-1", "alp_no", "same_as.json")  # a cell's marker beside its records
    marker.write_text(json.dumps({"task": "rte", "depth": 1, "method": "alp_no", "same_as": "alp", "why": "x"}))
    md, err = _report(params, root, capsys)
    assert "same_as.json" not in md and "same_as.json" not in err
    name = "metrics/students/rte-2/kd/s7.json"  # the fixture's half-written file
    assert name in md and "cannot be read" in md and name in err
    assert np.isfinite(pd.read_csv(root / "report" / "results.csv")["mean"]).any()


# --- issue 37: a damaged or truncated predictions file is named and left out of the comparisons ----------------
def _sig_seeds(root) -> dict[tuple[int, str], int]:
    frame = pd.read_csv(root / "report" / "significance.csv")
    return {(int(r.layers), r.method): int(r.n_seeds) for r in frame.itertuples()}


def _damage(path, how: str) -> None:
    import os

    text = path.read_text()
    if how == "truncated":
        path.write_text(text[:len(text) // 2])
    elif how == "shorter":
        rec = json.loads(text)
        rec["validation"]["predictions"] = rec["validation"]["predictions"][:-3]
        path.write_text(json.dumps(rec))
    elif how == "not a list":
        rec = json.loads(text)
        rec["validation"]["predictions"] = "oops"
        path.write_text(json.dumps(rec))
    elif how == "a list":
        path.write_text("[1, 2]")
    elif how == "fifo":
        path.unlink()
        os.mkfifo(path)
    elif how == "folder":
        path.unlink()
        path.mkdir()


import pytest  # noqa: E402


@pytest.mark.parametrize("how, why", [("truncated", "cannot be read"), ("shorter", "37 predictions for 40 labels"),
                                      ("not a list", "`predictions` is not a list of numbers"),
                                      ("a list", "not a JSON object"), ("fifo", "a named pipe (FIFO)"),
                                      ("folder", "a folder")])
def test_a_damaged_predictions_file_is_named_and_left_out(params, root, capsys, how, why):
    import signal

    name = "predictions/rte-2/alp/s1.json"
    _damage(root / name, how)
    signal.alarm(120)  # a FIFO read would wait forever
    try:
        md, err = _report(params, root, capsys)
    finally:
        signal.alarm(0)
    line = next((x for x in md.splitlines() if name in x), "")
    assert why in line.split(name, 1)[1].split(";")[0], (why, line)
    assert name in err and why in err, err
    # the run's score still counts; its comparison uses the other seeds
    assert table_rows(md)[("2", "ALP")][0] == expected_cell([root.scores[("rte", 2, "alp", s)] for s in (1, 2, 3)])
    assert _sig_seeds(root)[(2, "alp")] == 2  # seeds 2 and 3: the comparison pools the seeds every task has


@pytest.mark.parametrize("how", ["garbled", "folder", "fifo", "binary"])
def test_a_damaged_training_log_is_named_and_left_out(params, root, capsys, how):
    import os
    import signal

    path = root / "logs" / "rte-2" / "alp" / "s1.csv"
    if how == "garbled":
        path.write_text("step,loss\n1,0.5\n2,0.4,9,9,9\n")
    elif how == "binary":
        path.write_bytes(b"\xff\xfe\x00step\n")
    else:
        path.unlink()
        path.mkdir() if how == "folder" else os.mkfifo(path)
    signal.alarm(120)  # a FIFO read would wait forever
    try:
        md, err = _report(params, root, capsys)
    finally:
        signal.alarm(0)
    assert "logs/rte-2/alp/s1.csv" in err and "not used" in err, err
    assert table_rows(md)[("2", "ALP")][0] == expected_cell([root.scores[("rte", 2, "alp", s)] for s in (1, 2, 3)])
