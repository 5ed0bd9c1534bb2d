"""The results of the replication: table, summaries and figures, from the metrics files of every run.

`collect` reads `metrics/teacher/<task>/*.json` and `metrics/students/*.json` under an output root into one
DataFrame; `summarise` turns it into mean and standard deviation over seeds for each task and for the
average over tasks; `write_report` writes, atomically, under `report/`:

- `results.md`    the table (teacher row, then a row per student depth and method; a column per task and
                  the average), with the profile, data source, teacher model and seeds that produced it
- `results.csv`   the same numbers to 4 decimals (layers, method, task, mean, std, n_seeds)
- `scores.csv`    students' mean scores in long form (task, depth, method, score) for `dvc plots`
- `scores_by_depth.csv`  the average over tasks, a column per method, a row per depth (`dvc plots`)
- `significance.csv`  each layer-mapping method against NO-KD, KD and PKD, and the baselines among themselves, at
                  each depth (gap, 95% interval, p-value, degrees of freedom; teachers, students and sentences
                  each counted once: `alpkd.significance`), also in results.md; `python -m alpkd significance`
                  recomputes it from metrics/ and predictions/ alone
- `intervals.csv` each student cell's mean with a 95% t interval over its teachers
- `summary.json`  the mean scores (teacher, and `students_<depth>L.<method>.<task or average>`) for
                  `dvc metrics show` and `dvc metrics diff`
- `figures/`      score vs depth, ALP attention maps per task, training curves per task (PNG)
- `plots/`        what `dvc plots show` draws, a column per method: `scores/<task>.csv` (score vs depth) and
                  `curves/<task>-<depth>.csv` (task loss during training, mean over seeds)

Scores are the task's headline GLUE metric (accuracy, F1, Matthews correlation or Pearson) x100. With
several seeds a cell is `mean ± std` (sample standard deviation, ddof=1). The average over tasks is taken
per seed (over seeds that have every task), then averaged over seeds.

The package, by concern: `collect` (reading the records and what else the runs left), `tables` (the numbers and
the results table), `comparisons` (significance and intervals), `figures` (PNG figures and `dvc plots` tables),
`markdown` (results.md), `files` (writing). Every public name is importable from `alpkd.report`.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..paths import Layout
from .collect import (COLUMNS, REQUIRED, SPLIT_COLUMNS, collect, damaged_predictions, duplicates, further_splits,
                      load_attention, load_logs, load_predictions, missing_runs, predictions_problem, record_problem,
                      runs_of, select, shown_columns, teacher_run, undefined)
from .comparisons import SIG_COLUMNS, cell_intervals, comparisons, detectable_gaps, significance, significance_table
from .figures import plot_tables, write_figures
from .files import rounded, write_numbers, write_plot_tables, write_text
from .markdown import METRIC_ABBREVIATIONS, TEXT_COLUMNS, markdown_table, results_markdown
from .tables import (AVERAGE, FLAG, SUMMARY_COLUMNS, attention_summary, format_cell, results_table,
                     summarise, trivial_row)

__all__ = ["AVERAGE", "COLUMNS", "FLAG",
           "METRIC_ABBREVIATIONS", "REQUIRED", "SIG_COLUMNS", "SPLIT_COLUMNS", "SUMMARY_COLUMNS", "TEXT_COLUMNS",
           "attention_summary", "cell_intervals", "collect", "comparisons", "damaged_predictions", "detectable_gaps",
           "duplicates",
           "format_cell", "further_splits", "load_attention", "load_logs", "load_predictions", "markdown_table",
           "missing_runs", "plot_tables", "predictions_problem", "record_problem", "records_of", "results_table", "runs_of",
           "select", "shown_columns",
           "significance", "significance_csv", "significance_table", "summarise", "teacher_run", "trivial_row", "undefined",
           "write_report", "write_text"]


def records_of(params, root: Path, skipped: list) -> tuple:
    """(every record, those of this grid, the cells that repeat another method's, the cells not defined)."""
    tasks, depths, methods = list(params.data.tasks), list(params.student.depths), list(params.distill.methods)
    collected = collect(root, params.profile, skipped)
    records = select(collected, tasks, depths, methods, list(params.distill.seeds), list(params.teacher.seeds))
    dups = {k: v for k, v in duplicates(root).items() if k[0] in tasks and k[1] in depths and k[2] in methods}
    undef = {k: v for k, v in undefined(root).items() if k[0] in tasks and k[1] in depths and k[2] in methods}
    return collected, records, dups, undef


def significance_csv(params, root: str | Path = ".") -> str:
    """The text of `report/significance.csv`, recomputed from the metrics records and predictions under `root`
    alone (what `write_report` writes there, byte for byte)."""
    _, records, dups, undef = records_of(params, Path(root), [])
    return rounded(significance(params, root, records, skipped=dups | undef)).to_csv(index=False)


def write_report(params, root: str | Path = ".") -> dict:
    """Write the report of the grid configured in `params` (an `alpkd.config.Params`) under `root/report`.

    Returns {"table": the table (strings), "summary": the numbers, "significance": the paired bootstrap
    comparisons, "attention": the ALP attention summary, "missing": runs without results, "files": {name: path}}.
    """
    root, out = Path(root), Layout(Path(root)).report()
    tasks, depths = list(params.data.tasks), list(params.student.depths)
    methods, seeds, teacher_seeds = list(params.distill.methods), list(params.distill.seeds), list(params.teacher.seeds)
    # what the runs left behind
    skipped = []  # (file, why) of the records not counted
    collected, records, dups, undef = records_of(params, root, skipped)
    columns = shown_columns(tasks, collected)  # + MNLI's mismatched set, shown but not averaged
    further = select(collected, [c for c in columns if c not in tasks], depths, methods, seeds, teacher_seeds)
    student_runs = runs_of(records[records["role"] == "student"])
    skipped += damaged_predictions(root, student_runs)  # named, and left out of the comparisons
    teacher_runs = [(t, s) for t in tasks for s in teacher_seeds]
    logs, maps = load_logs(root, student_runs, teachers=teacher_runs), load_attention(root, student_runs)
    # the numbers
    summary, trivial = summarise(records, tasks), trivial_row(records, tasks)
    extra = [c for c in columns if c not in tasks]
    shown = pd.concat([summary, summarise(further, extra).query("task != @AVERAGE")]) if extra else summary
    trivial_shown = {**trivial_row(further, extra), **trivial}
    table = results_table(shown, columns, depths, methods, trivial_shown, skipped=dups, undefined=undef)
    missing = missing_runs(records, tasks, depths, methods, seeds, skipped=dups | undef, teacher_seeds=teacher_seeds)
    from .. import progress

    progress.log(f"report: {len(records)} records; the comparisons")
    sig = significance(params, root, records, skipped=dups | undef)
    progress.log(f"report: {len(sig)} comparisons done; figures and tables")
    attention = attention_summary(records, maps)
    # the files
    headline = {t: records.loc[records["task"] == t, "headline"].iloc[0] for t in tasks if (records["task"] == t).any()}
    figures = write_figures(params, records, summary, trivial, headline, maps, logs, out / "figures", sig)
    headline = {c: collected.loc[collected["task"] == c, "headline"].iloc[0] for c in columns
                if (collected["task"] == c).any()}
    intervals = cell_intervals(records)
    files = {p.stem: p for p in figures} | write_numbers(out, shown, methods, trivial_shown, sig, attention, intervals)
    files |= write_plot_tables(out / "plots", plot_tables(records, summary, logs, tasks, depths, methods))
    files["results.md"] = write_text(out / "results.md", results_markdown(
        params, records, skipped, table, headline, extra, dups, undef, sig, intervals, attention, missing, figures))
    return {"table": table, "summary": summary, "significance": sig, "attention": attention, "missing": missing,
            "files": files}
