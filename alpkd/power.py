"""Which design can see a one-point gap? Variance components of a finished run, and the interval they predict for
other numbers of teachers.

A run's per-sentence gaps between two methods (`significance.gap_table`: teachers x students x sentences) give the
five variance components of `alpkd.significance` by the method of moments (expected mean squares, negative
estimates taken as zero). With one student per teacher the student is part of its teacher's unit and the
residual part of the teacher x sentence term; such a run predicts designs of one student per teacher, which is the
cheapest design for a given number of students anyway (a teacher's term divides by T, a student's by T n).

For a design of T teachers with n students each on N sentences the variance of a mean gap is

    a/T + b/(T n) + g/N + ag/(T N) + e/(T n N)

(teacher, student, sentence, teacher x sentence, residual), with Satterthwaite's degrees of freedom from the same
expected mean squares, so the predicted 95% half-width is what `crossed_comparison` would report on average.
The sentence term does not shrink with more teachers: it is the floor of the validation set.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from .significance import gap_table, mean_squares

COMPONENTS = ("teacher", "student", "sentence", "teacher x sentence", "residual")


def components(d: np.ndarray) -> dict:
    """Variance components of a (teachers, students, sentences) table of gaps (method of moments, >= 0)."""
    T, n, N = d.shape
    ms = {k: v[0] for k, v in mean_squares(d).items()}
    if n > 1:
        e = ms["residual"]
        b = (ms["student"] - e) / N
        ag = (ms["teacher x sentence"] - e) / n
        a = (ms["teacher"] - ms["student"] - ms["teacher x sentence"] + e) / (n * N)
    else:  # the student inside its teacher's unit, the residual inside teacher x sentence
        e = b = 0.0
        ag = ms["teacher x sentence"]
        a = (ms["teacher"] - ag) / N
    g = (ms["sentence"] - ms["teacher x sentence"]) / (T * n)
    return {k: max(float(v), 0.0) for k, v in zip(COMPONENTS, (a, b, g, ag, e))}


def predicted(comp: dict, T: int, n: int, N: int, level: float = 0.95) -> tuple[float, float, float]:
    """(variance of the mean gap, Satterthwaite degrees of freedom, half-width of the `level` interval) for T
    teachers of n students on N sentences."""
    a, b, g, ag, e = (comp[k] for k in COMPONENTS)
    var = a / T + b / (T * n) + g / N + ag / (T * N) + e / (T * n * N)
    ms_t, ms_j, ms_tj = e + N * b + n * ag + n * N * a, e + n * ag + T * n * g, e + n * ag
    df = (ms_t + ms_j - ms_tj) ** 2 / (ms_t ** 2 / (T - 1) + ms_j ** 2 / (N - 1) + ms_tj ** 2 / ((T - 1) * (N - 1)))
    return var, df, float(stats.t.ppf(0.5 + level / 2, df) * np.sqrt(var))


def power_table(params, root: str | Path, pairs, teachers=(3, 5, 7, 8, 10, 12, 16, 22)) -> pd.DataFrame:
    """For each task, depth and (A, B) of `pairs` measured in the run under `root`: its components (points^2, x100
    scale) and the predicted 95% half-width (points) with one student per teacher for each number of `teachers`."""
    from .report import records_of
    from .report.comparisons import paired_items

    _, records, dups, undef = records_of(params, Path(root), [])
    rows = []
    for depth in params.student.depths:
        for a, b in pairs:
            if any((t, depth, m) in dups | undef for t in params.data.tasks for m in (a, b)):
                continue
            for item in paired_items(params, root, records, depth, a, b):  # a table per validation set
                d = 100 * gap_table(item)
                comp = components(d)
                row = {"task": item["task"], "layers": depth, "comparison": f"{a} - {b}",
                       "run": f"{d.shape[0]} x {d.shape[1]}", **{k: comp[k] for k in COMPONENTS}}
                for T in teachers:
                    row[f"T={T}"] = predicted(comp, T, 1, d.shape[2])[2]
                rows.append(row)
    return pd.DataFrame(rows)
