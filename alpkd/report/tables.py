"""The numbers of the results table: mean and spread over seeds per cell, the trivial predictor, the table
itself (strings, one row per teacher depth and student method), and the summary of ALP's attention."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..paths import Run
from .collect import runs_of
from .. import methods as meth
from ..methods import label



AVERAGE = "average"


FLAG = "\u26a0"  # a cell with a seed whose validation predictions are constant (or whose metric is undefined)


SUMMARY_COLUMNS = ["role", "layers", "method", "task", "mean", "std", "n_seeds", "n_nan", "n_constant"]


def _stats(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Per group of `frame` (a row a seed, columns `score100` and `constant`): mean and sample std of the
    defined scores, the number of seeds, how many scores are NaN (undefined), how many seeds were constant."""
    return frame.groupby(by, sort=False).agg(
        mean=("score100", "mean"), std=("score100", "std"), n_seeds=("score100", "size"),
        n_nan=("score100", lambda s: int(s.isna().sum())), n_constant=("constant", "sum")).reset_index()


def _seed_averages(records: pd.DataFrame, tasks: list[str], by: list[str]) -> pd.DataFrame:
    """A row per group and seed that has every task: the mean score over tasks (NaN where a task's is NaN),
    and whether the seed's predictions were constant on any task."""
    seeds = [*by, "seed"]
    cells = records[records["task"].isin(tasks)]
    complete = cells.groupby(seeds)["task"].nunique() == len(set(tasks))
    scores = cells.groupby([*seeds, "task"])["score100"].mean().unstack("task")
    scores = scores.reindex(index=complete.index[complete], columns=tasks)
    constant = records.groupby(seeds)["constant"].any().reindex(scores.index)
    return pd.DataFrame({"score100": scores.mean(axis=1, skipna=False), "constant": constant}).reset_index()


def summarise(records: pd.DataFrame, tasks: list[str]) -> pd.DataFrame:
    """Mean, std and count over seeds of the score x100, per (layers, method, task) and for the average.

    Columns `SUMMARY_COLUMNS`: `n_nan` counts seeds whose metric is undefined (a Pearson r of constant
    predictions), left out of mean and std and flagged; `n_constant` counts seeds with constant predictions.
    The average of a (layers, method) is computed for each seed that has every task, then over those seeds;
    a seed with an undefined task score has an undefined average. Rows: (role, layers, method) in the order
    of `records`, each with its tasks in the order of `tasks`, then the average.
    """
    if records.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    cells = ["role", "depth", "method"]
    records = records.assign(score100=records["score"] * 100.0, cell=records.groupby(cells, sort=False).ngroup())
    per_task = _stats(records[records["task"].isin(tasks)], ["cell", *cells, "task"])
    average = _stats(_seed_averages(records, tasks, ["cell", *cells]), ["cell", *cells]).assign(task=AVERAGE)
    position = {task: i for i, task in enumerate([*tasks, AVERAGE])}
    out = pd.concat([per_task, average]).assign(position=lambda f: f["task"].map(position))
    out = out.sort_values(["cell", "position"]).rename(columns={"depth": "layers"})
    return out[SUMMARY_COLUMNS].reset_index(drop=True)


def format_cell(mean: float, std: float, n: int, n_nan: int = 0, n_constant: int = 0) -> str:
    """`71.2`, or `71.2 ± 0.4` with several seeds; `–` where there is no result; flagged with ⚠ where a seed's
    predictions are constant, and `NaN` (with how many seeds) where a seed's metric is undefined."""
    if n == 0:
        return "–"
    if n_nan:
        return f"NaN ({n_nan} of {n} seeds) {FLAG}"
    cell = f"{mean:.1f} ± {std:.1f}" if n > 1 and not pd.isna(std) else f"{mean:.1f}"
    return f"{cell} {FLAG}" if n_constant else cell


def trivial_row(records: pd.DataFrame, tasks: list[str]) -> dict[str, float]:
    """The trivial predictor's headline score x100 per task (from the teacher records; NaN where the metric
    is undefined for a constant, e.g. Pearson r), and its average over tasks with undefined counted as 0."""
    teachers = records[records["role"] == "teacher"]
    scores = 100.0 * teachers.groupby("task")["trivial"].first().reindex(tasks).astype(float)
    average = float(scores.fillna(0.0).mean()) if scores.notna().any() else float("nan")
    return {**{task: float(v) for task, v in scores.items()}, AVERAGE: average}


def results_table(summary: pd.DataFrame, tasks: list[str], depths: list[int], methods: list[str],
                  trivial: dict[str, float] | None = None, skipped=(), undefined=()) -> pd.DataFrame:
    """Rows: the trivial predictor, the teacher(s), then each student depth (as configured) and method
    (cells in `skipped`, the same objective as another method, left out; cells in `undefined`, a method not
    defined at that depth, say so); columns: tasks, average."""
    index = {(r.role, r.layers, r.method, r.task): r for r in summary.itertuples(index=False)}
    rows = []
    if trivial is not None:
        row = {"layers": "–", "method": "trivial"}
        for task in [*tasks, AVERAGE]:
            v = trivial.get(task, float("nan"))
            row[task] = "undefined (constant)" if pd.isna(v) else f"{v:.1f}"
        rows.append(row)
    keys = [("teacher", int(layers), "teacher")
            for layers in sorted(set(summary.loc[summary["role"] == "teacher", "layers"]), reverse=True)]
    own = {t.split("-", 1)[0] for t in tasks}  # a further split's column (`mnli-mm`) is its task's (task names hold no -)
    keys += [("student", int(d), m) for d in depths for m in methods
             if not all((t, d, m) in skipped for t in own)]
    for role, layers, method in keys:
        row = {"layers": layers, "method": "teacher" if role == "teacher" else label(method)}
        for task in [*tasks, AVERAGE]:
            r = index.get((role, layers, method, task))
            none = "not defined" if all((t, layers, method) in undefined for t in own) and role == "student" else "–"
            row[task] = format_cell(r.mean, r.std, r.n_seeds, r.n_nan, r.n_constant) if r is not None else none
        rows.append(row)
    return pd.DataFrame(rows, columns=["layers", "method", *tasks, AVERAGE])


def attention_summary(records: pd.DataFrame, maps: dict[Run, dict]) -> pd.DataFrame:
    """Per ALP cell: score, mean attention entropy (bits) over the validation set, and the teacher layer each
    student layer attends to most, per seed, with whether every seed chose the same layers."""
    rows = []
    students = records[records["role"] == "student"]
    students = students[students["method"].map(lambda m: meth.get(m).attention is not None).astype(bool)]
    for (task, depth, method), group in students.groupby(["task", "depth", "method"], sort=False):
        recs = [maps.get(r) for r in runs_of(group)]
        recs = [r for r in recs if r is not None]
        if not recs:
            continue
        top = [tuple(int(j) + 1 for j in np.asarray(r["weights"]).argmax(-1)) for r in recs]
        entropy = [float(np.mean(r["entropy_bits"])) for r in recs if r.get("entropy_bits") is not None]
        rows.append({"task": task, "layers": int(depth), "method": method,
                     "score": 100 * float(np.nanmean(group["score"])),
                     "entropy_bits": float(np.mean(entropy)) if entropy else float("nan"),
                     "entropy_std": float(np.std(entropy, ddof=1)) if len(entropy) > 1 else float("nan"),
                     "teacher_layers": int(np.asarray(recs[0]["weights"]).shape[-1]),
                     "top_layers": " / ".join("(" + ",".join(map(str, t)) + ")" for t in top),
                     "same_across_seeds": len(set(top)) == 1})
    return pd.DataFrame(rows)
