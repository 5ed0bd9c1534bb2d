"""What the rehearsal of the paper profile (tests/test_paper_rehearsal.py) found, each fix with its test."""
from __future__ import annotations

import types

import helpers  # noqa: F401 - the checkout importable, offline


def test_log_of_a_run_shorter_than_logging_steps(tmp_path):
    """A run of fewer steps than `runtime.logging_steps` (50 in the paper profile) logs no step. Its log was a
    file holding one newline, which pandas cannot read (EmptyDataError failed the teacher stage's curve, and the
    report's reading of the logs); now it is the header alone, and the curve of it an empty figure saying so."""
    import matplotlib.pyplot as plt
    import pandas as pd

    from alpkd import plots, records

    trainer = types.SimpleNamespace(state=types.SimpleNamespace(log_history=[{"train_loss": 0.7, "step": 2}]))
    log = tmp_path / "s42.csv"
    records.write_log(trainer, log)
    frame = pd.read_csv(log)
    assert frame.empty and list(frame.columns) == ["step", "loss"]
    fig = plots.training_curve(log, title="teacher")
    assert [t.get_text() for t in fig.axes[0].texts] == ["no step logged\n(fewer steps than runtime.logging_steps)"]
    assert not fig.axes[0].lines
    plt.close(fig)


def test_report_shows_mnli_mismatched_as_a_column_of_its_own(tmp_path):
    """MNLI's records hold both validation sets (accuracy_matched, the headline, and accuracy_mismatched); the
    report showed the matched set alone. `collect` now gives the mismatched set a row of its own (task
    `mnli-mm`, with its trivial score), and the results table a column after `mnli`, not counted in the average."""
    import json

    from alpkd import report

    def write(path, rec):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(rec))

    common = {"task": "mnli", "headline": "accuracy_matched", "profile": "paper", "environment": {}}
    write(tmp_path / "metrics" / "teacher" / "mnli" / "s42.json",
          {**common, "depth": 12, "seed": 42, "score": 0.84, "metrics": {"accuracy_matched": 0.84,
           "accuracy_mismatched": 0.83}, "trivial": {"accuracy_matched": 0.35, "accuracy_mismatched": 0.36}})
    write(tmp_path / "metrics" / "students" / "mnli-6" / "kd" / "s1.json",
          {**common, "depth": 6, "seed": 1, "method": "kd", "teacher_seed": 42, "teacher_layers": 12,
           "score": 0.80, "metrics": {"accuracy_matched": 0.80, "accuracy_mismatched": 0.79}})
    write(tmp_path / "metrics" / "teacher" / "rte" / "s42.json",
          {**common, "task": "rte", "headline": "accuracy", "depth": 12, "seed": 42, "score": 0.6,
           "metrics": {"accuracy": 0.6}, "trivial": {"accuracy": 0.5}})
    records = report.collect(tmp_path)
    mm = records[records["task"] == "mnli-mm"].set_index("role")
    assert mm.loc["teacher", "score"] == 0.83 and mm.loc["teacher", "trivial"] == 0.36
    assert mm.loc["student", "score"] == 0.79 and mm.loc["student", "headline"] == "accuracy_mismatched"
    assert list(records.loc[records["task"] == "rte", "task"]) == ["rte"]  # one validation set: one row
    assert report.shown_columns(["rte", "mnli", "qqp"], records) == ["rte", "mnli", "mnli-mm", "qqp"]
    tasks = ["mnli", "rte"]
    summary = report.summarise(report.select(records, tasks, [6], ["kd"], [1]), tasks)
    teacher_average = summary[(summary["role"] == "teacher") & (summary["task"] == "average")]["mean"].item()
    assert abs(teacher_average - 100 * (0.84 + 0.6) / 2) < 1e-9  # MNLI once, by its matched set


def test_log_columns_do_not_depend_on_the_rows_key_order(tmp_path):
    """A resumed run restores its earlier rows from trainer_state.json, keys sorted; the rows it logs after come in
    the Trainer's order. The log's columns are one fixed order either way, so the two logs are the same bytes."""
    from alpkd import records

    row = {"loss": 0.5, "grad_norm": 0.1, "learning_rate": 1e-4, "loss_ce": 0.4, "loss_kd": 0.1, "epoch": 1.0,
           "step": 3}
    sorted_row = dict(sorted(row.items()))
    paths = []
    for history in ([row, row], [sorted_row, row]):
        trainer = types.SimpleNamespace(state=types.SimpleNamespace(log_history=history))
        paths.append(tmp_path / f"{len(paths)}.csv")
        records.write_log(trainer, paths[-1])
    assert paths[0].read_bytes() == paths[1].read_bytes()
    assert paths[0].read_text().splitlines()[0] == "step,epoch,loss,loss_ce,loss_kd,grad_norm,learning_rate"
