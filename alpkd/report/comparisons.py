"""Is a gap more than noise: comparisons between methods with each source of variance counted once (teachers,
students, sentences: `alpkd.significance.crossed_comparison`), and each student cell's 95% interval over its
teachers."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .collect import load_predictions, runs_of
from .. import methods as meth
from ..methods import label



SIG_COLUMNS = ["layers", "method", "baseline", "gap", "low", "high", "p_value", "p_adjusted", "n_tasks", "n_seeds",
               "n_teachers", "df"]


comparisons = meth.comparisons  # (A, B) pairs the report tests: each method against those it is declared to be
# compared with (the layer-mapping methods against the baselines, the baselines among themselves: the well-replicated
# effects a run must see before it can judge ALP's finer claim, the matching controls, the teacher-assistant methods)


def paired_items(params, root: str | Path, records: pd.DataFrame, depth: int, a: str, b: str) -> list[dict]:
    """The predictions of methods `a` and `b` at `depth`, per task where both have predictions for the same seeds
    on the same validation examples: the items `alpkd.significance.crossed_comparison` takes (`teachers`: the
    teacher of each seed, None where none is recorded or the teachers have unequal numbers of students)."""
    students = records[records["role"] == "student"]
    teacher_of = dict(zip(students["seed"], students["teacher_seed"]))  # each student seed's teacher
    items = []
    for task_name in params.data.tasks:
        task = params.task(task_name)
        split = task.validation_splits[0]
        preds = {}
        for m in (a, b):
            cell = students[(students["task"] == task_name) & (students["depth"] == depth)
                            & (students["method"] == m)].sort_values("seed")
            preds[m] = {r.seed: load_predictions(root, r, split) for r in runs_of(cell)}
            preds[m] = {k: v for k, v in preds[m].items() if v is not None}
        seeds = sorted(set(preds[a]) & set(preds[b]))
        if not seeds:
            continue
        teachers = [teacher_of.get(k) for k in seeds]
        counts = pd.Series(teachers).value_counts()
        if any(t is None or pd.isna(t) for t in teachers) or counts.nunique() != 1:
            teachers = None  # no pairing recorded, or an unbalanced subset: every seed its own unit
        labels = preds[a][seeds[0]][0]
        if any(len(preds[m][k][0]) != len(labels) or (preds[m][k][0] != labels).any()
               for m in (a, b) for k in seeds):
            continue  # runs evaluated on different examples (or in another order) cannot be paired
        items.append({"task": task_name, "metric": task.headline, "labels": labels, "teachers": teachers,
                      "a": [preds[a][k][1] for k in seeds], "b": [preds[b][k][1] for k in seeds]})
    return items


def significance(params, root: str | Path, records: pd.DataFrame, skipped=()) -> pd.DataFrame:
    """Each comparison at each depth (`alpkd.significance.crossed_comparison`: teachers, their students and the
    validation sentences as random, each counted once; a t reference with Satterthwaite's degrees of freedom),
    pooled over the tasks where both methods have predictions for the same seeds; gap and interval x100; p-values
    raw and adjusted (Benjamini-Hochberg) over every comparison in the table.
    A comparison involving a cell that is another method's duplicate (`skipped`) is left out: it would
    repeat one already made.
    """
    from ..significance import adjust, crossed_comparison

    rows = []
    for depth in params.student.depths:
        for a, b in comparisons(list(params.distill.methods)):
            if any((t, depth, m) in skipped for t in params.data.tasks for m in (a, b)):
                continue
            items = paired_items(params, root, records, depth, a, b)
            if items:
                c = crossed_comparison(items)
                rows.append((depth, a, b, 100 * c.gap, 100 * c.low, 100 * c.high, c.p_value, np.nan, c.n_tasks,
                             c.n_seeds, c.n_teachers, c.df))
    sig = pd.DataFrame(rows, columns=SIG_COLUMNS)
    sig["p_adjusted"] = adjust(sig["p_value"]) if len(sig) else []
    return sig


def significance_table(sig: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "layers": sig["layers"],
        "comparison": [f"{label(a)} − {label(b)}" for a, b in zip(sig["method"], sig["baseline"])],
        "gap": [f"{g:+.1f}" for g in sig["gap"]],
        "95% interval": [f"[{lo:+.1f}, {hi:+.1f}]" for lo, hi in zip(sig["low"], sig["high"])],
        "p": [f"{p:.3f}" for p in sig["p_value"]],
        "p (BH)": [f"{p:.3f}" for p in sig["p_adjusted"]],
        "tasks": sig["n_tasks"],
        "teachers": sig["n_teachers"],
        "seeds": sig["n_seeds"],
        "df": [f"{d:.1f}" for d in sig["df"]],
        "verdict": [("within noise" if p >= 0.05 else (f"{label(a)} better" if g > 0 else f"{label(a)} worse"))
                    for a, g, p in zip(sig["method"], sig["gap"], sig["p_adjusted"])],
    })


def cell_intervals(records: pd.DataFrame) -> pd.DataFrame:
    """Per student (depth, method, task): the mean score x100 over seeds and a 95% t interval of that mean over
    its teachers (each teacher's students averaged first, T - 1 degrees of freedom; the validation sentences held
    fixed): where a re-run that draws other teachers and students of the same kind should land, 19 times in 20.
    With one teacher, its students are the units. Cells with a NaN score or one seed get no interval."""
    from scipy import stats

    rows = []
    students = records[records["role"] == "student"]
    for (depth, method, task), cell in students.groupby(["depth", "method", "task"], sort=False):
        scores = 100.0 * cell["score"].to_numpy(dtype=float)
        low = high = np.nan
        units = cell.assign(score=scores).groupby("teacher_seed", dropna=False)["score"].mean().to_numpy()
        if len(units) == 1:
            units = scores
        if len(units) > 1 and not np.isnan(units).any():
            half = stats.t.ppf(0.975, len(units) - 1) * units.std(ddof=1) / np.sqrt(len(units))
            low, high = units.mean() - half, units.mean() + half
        rows.append({"layers": int(depth), "method": method, "task": task, "mean": float(scores.mean()),
                     "low": float(low), "high": float(high), "n_seeds": len(scores),
                     "n_teachers": int(cell["teacher_seed"].nunique())})
    return pd.DataFrame(rows, columns=["layers", "method", "task", "mean", "low", "high", "n_seeds", "n_teachers"])


def detectable_gaps(sig: pd.DataFrame) -> pd.DataFrame:
    """Per depth, the ALP − KD gap and the half-width of its 95% interval: gaps smaller than the half-width
    cannot be told from noise by this run (teachers, students and validation sentences, each counted once)."""
    rows = sig[(sig["method"] == meth.PAPER) & (sig["baseline"] == meth.PAPER_BASELINE)]
    return pd.DataFrame({"layers": rows["layers"], "gap": rows["gap"],
                         "half_width": (rows["high"] - rows["low"]) / 2}).reset_index(drop=True)
