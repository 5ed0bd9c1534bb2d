"""The report's figures (PNG, drawn by `alpkd.plots`) and the tables `dvc plots show` draws (CSV)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..paths import Run
from .collect import runs_of
from .files import remove_stale
from .. import methods as meth
from .tables import AVERAGE


def write_figures(params, records: pd.DataFrame, summary: pd.DataFrame, trivial: dict, headline: dict,
                  maps: dict[Run, dict], logs: dict[str, pd.DataFrame], figures: Path,
                  sig: pd.DataFrame | None = None) -> list[Path]:
    """Score vs depth (with each method's gap to NO-KD and its interval, from `sig`, the significance table), attention
    maps (final, and during training) and training curves; stale PNGs removed."""
    from .. import plots

    tasks, depths, methods = list(params.data.tasks), list(params.student.depths), list(params.distill.methods)
    written = []
    student_summary = summary[summary["role"] == "student"].rename(columns={"layers": "depth"})
    teacher_scores = summary[summary["role"] == "teacher"].set_index("task")["mean"].to_dict()
    if not student_summary.empty:
        # the average panel only where it averages something: with one task it repeats that task's
        panels = [t for t in [*tasks, *([AVERAGE] if len(tasks) > 1 else [])] if (student_summary["task"] == t).any()]
        reference = meth.reference()
        gaps = None if sig is None else sig[sig["baseline"] == reference]
        fig = plots.score_vs_depth(student_summary, teacher_scores, panels, headline, trivial, meth.looks(methods),
                                   gaps, f"gap to {meth.label(reference)}" + ("" if len(tasks) == 1 else
                                                                              " (average over tasks)"))
        written.append(plots.save(fig, figures / "scores_vs_depth.png"))
    for task in tasks:
        written += _attention_figures(records, task, depths, [m for m in methods if meth.get(m).attention], maps,
                                      figures, meth.looks(methods))
        written += _curves_figure(records, task, depths, logs, figures, meth.looks(methods))
    remove_stale(figures, "*.png", keep=written)
    return written


def _attention_figures(records: pd.DataFrame, task: str, depths: list[int], alp_methods: list[str],
                       maps: dict[Run, dict], figures: Path, looks: dict) -> list[Path]:
    """The task's ALP attention maps (mean over seeds), and the first seed's attention during training."""
    from .. import plots

    runs = records[(records["role"] == "student") & (records["task"] == task) & records["method"].isin(alp_methods)]
    by_cell, history, written = {}, {}, []
    for (depth, method), group in runs.groupby(["depth", "method"]):
        recs = [maps[r] for r in runs_of(group) if r in maps]
        if recs:
            by_cell[(int(depth), method)] = np.mean([r["weights"] for r in recs], axis=0)  # mean over seeds
            if recs[0].get("history"):
                history[(int(depth), method)] = recs[0]["history"]  # the first seed's
    n = records.loc[(records["role"] == "teacher") & (records["task"] == task), "depth"]
    teacher_note = f" (teacher: {int(n.iloc[0])} layers)" if len(n) else ""
    if by_cell:
        shown = [d for d in depths if any(k[0] == d for k in by_cell)]
        shown_methods = [m for m in alp_methods if any(k[1] == m for k in by_cell)]
        fig = plots.attention_grid(by_cell, shown, shown_methods, f"{task}: ALP attention over teacher layers"
                                   + teacher_note + ", mean over seeds", looks)
        written.append(plots.save(fig, figures / f"attention_{task}.png"))
    if history:
        fig = plots.attention_history(history, f"{task}: attention during training (first seed, fixed batch)", looks)
        written.append(plots.save(fig, figures / f"attention_history_{task}.png"))
    return written


def _curves_figure(records: pd.DataFrame, task: str, depths: list[int], logs: dict[str, pd.DataFrame],
                   figures: Path, looks: dict) -> list[Path]:
    """The task's training loss (`loss_ce`: cross-entropy, MSE for regression, the term every objective shares, so the
    methods' curves compare; a total with PKD's layer term, x pkd_beta, would flatten the others): a panel for the
    teachers (a line each), and per student depth one for the paper's methods and one for the controls (a line per
    method, the mean over its seeds)."""
    from .. import plots

    task_runs = records[(records["role"] == "student") & (records["task"] == task)]
    teachers = records[(records["role"] == "teacher") & (records["task"] == task)]
    teacher_runs = list(teachers["run"])
    if not any(name in logs for name in [*teacher_runs, *task_runs["run"]]):
        return []
    panel_runs = {"teachers": teacher_runs}
    for d in depths:
        at_depth = task_runs[task_runs["depth"] == d]
        control = at_depth["method"].isin(meth.of_family("control", list(at_depth["method"])))
        if (~control).any():
            panel_runs[f"{d} layer(s)"] = list(at_depth.loc[~control, "run"])
        if control.any():
            panel_runs[f"{d} layer(s): controls"] = list(at_depth.loc[control, "run"])
    method_of = dict(zip(task_runs["run"], task_runs["method"])) | dict(zip(teachers["run"], teachers["run"]))
    labels = {r: f"teacher s{int(s)}" for r, s in zip(teachers["run"], teachers["seed"])}
    fig = plots.training_curves(logs, panel_runs, "loss_ce", method_of, labels, looks, "task loss")
    plots.suptitle(fig, f"{task}: task loss during training (students: mean over seeds, band: lowest to highest seed)")
    return [plots.save(fig, figures / f"curves_{task}.png")]


def plot_tables(records: pd.DataFrame, summary: pd.DataFrame, logs: dict[str, pd.DataFrame], tasks: list[str],
                depths: list[int], methods: list[str]) -> dict[str, pd.DataFrame]:
    """What `dvc plots show` draws, a column per method (every method of the grid, empty where it has no run),
    so each plot holds one task (and depth) and the methods are the lines:

    - `scores/<task>.csv` (and `average.csv`): the mean headline score x100 against the student's depth;
    - `curves/<task>-<depth>.csv`: the task loss (cross-entropy, MSE for regression) during training, mean
      over seeds, against the step: the term every method shares, so the curves can be compared.

    `logs`: the training logs by run name (`load_logs`).
    """
    tables = {}
    student = summary[summary["role"] == "student"]
    for task in [*tasks, AVERAGE]:
        rows = student[student["task"] == task]
        if not rows.empty:
            tables[f"scores/{task}.csv"] = (rows.pivot_table(index="layers", columns="method", values="mean")
                                            .reindex(index=sorted(depths), columns=methods).rename_axis("depth"))
    students = records[records["role"] == "student"]
    for (task, depth), cell in students.groupby(["task", "depth"]):
        curves = {}
        for method, group in cell.groupby("method"):
            frames = [logs[r] for r in group["run"] if r in logs and "loss_ce" in logs[r]]
            if frames:
                curves[method] = pd.concat(frames).groupby("step")["loss_ce"].mean()
        if curves:
            tables[f"curves/{task}-{int(depth)}.csv"] = pd.DataFrame(curves).reindex(columns=methods).sort_index()
    return tables
