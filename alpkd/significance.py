"""Is a gap between two methods more than noise? Variance components of a crossed, nested design.

Every student learns from one teacher (T teachers, n students each: students nested in teachers), and every
student is scored on the same N validation sentences (students crossed with sentences). For a per-sentence score
(correctness for accuracy; a jackknife pseudo-value for the other metrics) the gap between methods A and B of
student s of teacher t on sentence j, `d[t, s, j]` (seed k of A paired with seed k of B: same teacher,
initialisation and data order), is modelled as

    d[t, s, j] = gap + teacher[t] + student[t, s] + sentence[j] + (teacher x sentence)[t, j] + residual[t, s, j]

with every term random, so a verdict holds for other teachers, students and sentences of the same kind. Each
source counts once in the variance of the mean gap, which the design's mean squares give without bias
(expected mean squares of a balanced table):

    Var = (MS_teacher + MS_sentence - MS_teacher x sentence) / (T n N)

and its Satterthwaite degrees of freedom follow from the same three mean squares (`crossed_gap`). With three
teachers they are about 2 when teachers dominate: the 97.5% quantile is then 4.3, not 1.96. A negative sentence
component (MS_sentence < MS_teacher x sentence) is taken as zero: the teacher means alone, T - 1 degrees of freedom.
With one teacher the students are the units (the verdict is about that teacher); with one student, the sentences.

The earlier method, `paired_bootstrap` (seeds and sentences resampled independently: Owen's pigeonhole
bootstrap), is kept to show what this replaces: it counts the seed x sentence term about three times and shrinks
the teacher variance by (T - 1)/T with normal quantiles, so it over-covers where students and sentences dominate
and under-covers where teachers do (tests/test_coverage.py measures both).

`adjust` corrects a family of p-values for the number of comparisons (Benjamini-Hochberg, from SciPy).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .metrics import metric_value


@dataclass(frozen=True)
class Comparison:
    gap: float  # mean over tasks of (metric of A - metric of B), on the full validation sets
    low: float  # 95% bootstrap interval of the gap
    high: float
    p_value: float
    n_tasks: int
    n_seeds: int  # seeds per method (the smaller of the two)
    resamples: int
    n_teachers: int = 1  # teachers per task (the smallest over tasks) that the resampling drew from
    df: float = float("nan")  # degrees of freedom of the t reference (crossed_comparison); NaN for the bootstrap

    @property
    def significant(self) -> bool:
        return self.p_value < 0.05


def _resampled(metric: str, labels: np.ndarray, preds: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """`metric` on every resample (rows of `idx`) at once; counting formulas for the classification metrics."""
    y, p = labels[idx], preds[idx]  # (R, N)
    if metric == "accuracy":
        return (y == p).mean(axis=1)
    if metric in ("f1", "matthews") and set(np.unique(labels)) | set(np.unique(preds)) <= {0, 1}:
        tp = ((p == 1) & (y == 1)).sum(1).astype(float)
        fp = ((p == 1) & (y == 0)).sum(1).astype(float)
        fn = ((p == 0) & (y == 1)).sum(1).astype(float)
        tn = ((p == 0) & (y == 0)).sum(1).astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            if metric == "f1":  # sklearn's convention: 0 when there is no positive at all
                return np.where(tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
            den = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
            return np.where(den > 0, (tp * tn - fp * fn) / den, 0.0)
    return np.array([metric_value(metric, y[r], p[r]) for r in range(len(idx))])  # correlations, multiclass MCC


def adjust(p_values) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (`scipy.stats.false_discovery_control`); NaN stays NaN."""
    from scipy.stats import false_discovery_control

    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    if ok.any():
        out[ok] = false_discovery_control(p[ok], method="bh")
    return out


def seed_resamples(rng: np.random.Generator, resamples: int, n_seeds: int, teachers=None) -> np.ndarray:
    """(resamples, n_seeds) positions of seeds: iid draws, or with `teachers` (the teacher of each seed) the
    two-stage draw, teachers first, then the students of each drawn teacher."""
    if teachers is None:
        return rng.integers(0, n_seeds, (resamples, n_seeds))
    teachers = np.asarray(teachers)
    members = [np.flatnonzero(teachers == t) for t in dict.fromkeys(teachers.tolist())]
    sizes = {len(m) for m in members}
    if len(sizes) != 1:
        raise ValueError(f"teachers with unequal numbers of students ({sorted(len(m) for m in members)}) "
                         "cannot be resampled in two stages; give every teacher the same number")
    members, n = np.stack(members), sizes.pop()  # (T, n)
    chosen = rng.integers(0, len(members), (resamples, len(members)))  # which teachers
    within = rng.integers(0, n, (resamples, len(members), n))  # which of each drawn teacher's students
    return members[chosen[..., None], within].reshape(resamples, -1)


def paired_bootstrap(
    tasks: list[dict],
    resamples: int = 1000,
    seed: int = 0,
    resample_seeds: bool = False,
    resample_examples: bool = True,
) -> Comparison:
    """Compare methods A and B over tasks. Each item of `tasks`:

    `{"metric": "accuracy", "labels": (N,), "a": [preds of seed 1, ...], "b": [preds of seed 1, ...],
    "teachers": [teacher of seed 1, ...]}` (the predictions of each seed of A and of B on the same N validation
    examples, in the same order; `teachers` optional, used with `resample_seeds`: the two-stage bootstrap).
    With `resample_seeds`, A and B need the same number of seeds (paired in order).
    """
    rng = np.random.default_rng(seed)
    observed, boot, n_teachers = [], np.zeros((resamples, len(tasks))), []
    for t, item in enumerate(tasks):
        labels = np.asarray(item["labels"])
        a, b = (np.asarray(item[k]) for k in ("a", "b"))
        n = len(labels)
        if a.shape[-1] != n or b.shape[-1] != n:
            raise ValueError(f"task {t}: predictions and labels differ in length")
        if resample_seeds and len(a) != len(b):
            raise ValueError(f"task {t}: {len(a)} seeds of A and {len(b)} of B cannot be paired")
        teachers = item.get("teachers")
        if teachers is not None and len(teachers) != len(a):
            raise ValueError(f"task {t}: {len(teachers)} teachers named for {len(a)} seeds")
        n_teachers.append(len(set(teachers)) if teachers is not None else 1)
        full = np.arange(n)[None]

        def per_seed(preds, rows):  # (rows, seeds): the metric of every seed on every resample
            return np.stack([_resampled(item["metric"], labels, p, rows) for p in preds], axis=1)

        observed.append(float(per_seed(a, full).mean() - per_seed(b, full).mean()))
        if resample_examples:
            idx = rng.integers(0, n, (resamples, n))
            sa, sb = per_seed(a, idx), per_seed(b, idx)
        else:  # the examples held fixed: the seeds' (and teachers') variation alone
            sa, sb = (np.repeat(per_seed(p, full), resamples, axis=0) for p in (a, b))
        if resample_seeds:
            seeds = seed_resamples(rng, resamples, len(a), teachers)
            sa, sb = np.take_along_axis(sa, seeds, axis=1), np.take_along_axis(sb, seeds, axis=1)
        boot[:, t] = sa.mean(axis=1) - sb.mean(axis=1)
    gaps = np.nan_to_num(boot.mean(axis=1))  # a degenerate resample (constant predictions) counts as no gap
    p = min(1.0, 2 * min(np.mean(gaps <= 0), np.mean(gaps >= 0)))
    low, high = np.percentile(gaps, [2.5, 97.5])
    seeds = min(min(len(item["a"]), len(item["b"])) for item in tasks)
    return Comparison(float(np.mean(observed)), float(low), float(high), float(p), len(tasks), seeds, resamples,
                      min(n_teachers))


def pseudo_values(metric: str, labels: np.ndarray, preds: np.ndarray) -> np.ndarray:
    """Per-sentence scores whose mean is the metric: correctness for accuracy; for any other metric the jackknife
    pseudo-values `N * m(all) - (N - 1) * m(all but j)`, whose spread gives the metric's sentence variance."""
    labels, preds = np.asarray(labels), np.asarray(preds)
    if metric == "accuracy":
        return (labels == preds).astype(float)
    n, whole = len(labels), metric_value(metric, labels, preds)
    keep = ~np.eye(n, dtype=bool)
    loo = np.array([metric_value(metric, labels[keep[j]], preds[keep[j]]) for j in range(n)])
    return n * whole - (n - 1) * loo


def gap_table(item: dict) -> np.ndarray:
    """(teachers, students per teacher, sentences): the per-sentence score of A minus B for each seed of an item
    of `crossed_comparison`, the seeds grouped by teacher; every seed its own teacher when no teacher is recorded
    or the teachers have unequal numbers of students."""
    labels, teachers = np.asarray(item["labels"]), item.get("teachers")
    d = np.stack([pseudo_values(item["metric"], labels, pa) - pseudo_values(item["metric"], labels, pb)
                  for pa, pb in zip(item["a"], item["b"])])  # (seeds, N)
    groups = [np.flatnonzero(np.asarray(teachers) == t) for t in dict.fromkeys(teachers)] if teachers else []
    if groups and len({len(g) for g in groups}) == 1:
        return d[np.stack(groups)]
    return d[:, None, :]


@dataclass(frozen=True)
class CrossedGap:
    gap: float  # mean of d over teachers, students and sentences
    variance: float  # of that mean, each source counted once
    df: float  # Satterthwaite degrees of freedom of the variance
    mean_squares: dict  # name -> (mean square, degrees of freedom)


def mean_squares(d: np.ndarray) -> dict:
    """Mean squares and their degrees of freedom of a balanced (teachers T, students n, sentences N) table."""
    T, n, N = d.shape
    grand, tm, sm = d.mean(), d.mean(axis=(1, 2)), d.mean(axis=2)
    jm, tjm = d.mean(axis=(0, 1)), d.mean(axis=1)
    ss = {"teacher": (n * N * ((tm - grand) ** 2).sum(), T - 1),
          "student": (N * ((sm - tm[:, None]) ** 2).sum(), T * (n - 1)),
          "sentence": (T * n * ((jm - grand) ** 2).sum(), N - 1),
          "teacher x sentence": (n * ((tjm - tm[:, None] - jm[None] + grand) ** 2).sum(), (T - 1) * (N - 1)),
          "residual": (((d - sm[..., None] - tjm[:, None] + tm[:, None, None]) ** 2).sum(), T * (n - 1) * (N - 1))}
    return {k: (float(s / df) if df else float("nan"), df) for k, (s, df) in ss.items()}


def crossed_gap(d) -> CrossedGap:
    """The mean gap of `d` (teachers, students per teacher, sentences), the unbiased variance of that mean and its
    Satterthwaite degrees of freedom (module docstring). With one teacher the students are the top units, with
    one student of one teacher the sentences are."""
    d = np.asarray(d, dtype=float)
    if d.ndim != 3 or min(d.shape) < 1:
        raise ValueError(f"d must be (teachers, students, sentences), got shape {d.shape}")
    if d.shape[0] == 1 and d.shape[1] > 1:  # one teacher: its students are the units
        d = d.reshape(d.shape[1], 1, d.shape[2])
    T, n, N = d.shape
    ms = mean_squares(d)
    if T == 1:  # one student: a paired comparison over the sentences
        var, df = ms["sentence"][0] / N, N - 1.0
    else:
        (mt, dt), (mj, dj), (mtj, dtj) = ms["teacher"], ms["sentence"], ms["teacher x sentence"]
        if N > 1 and mj > mtj:
            total = mt + mj - mtj
            df = total ** 2 / (mt ** 2 / dt + mj ** 2 / dj + mtj ** 2 / dtj)
        else:  # no sentence component to add: the teacher means alone
            total, df = mt, float(dt)
        var = total / (T * n * N)
    return CrossedGap(float(d.mean()), float(max(var, 0.0)), float(df), ms)


def crossed_comparison(tasks: list[dict], level: float = 0.95) -> Comparison:
    """Compare methods A and B over tasks (items as for `paired_bootstrap`; `teachers`: the teacher of each seed,
    every teacher with the same number of students, else each seed is taken as its own teacher). The gap is the
    mean over tasks of the metric difference; its variance the sum of the tasks' `crossed_gap` variances over the
    number of tasks squared, with Satterthwaite's degrees of freedom; a t interval and a two-sided t p-value."""
    from scipy import stats

    gaps, variances, dfs, n_teachers, n_seeds = [], [], [], [], []
    for k, item in enumerate(tasks):
        labels = np.asarray(item["labels"])
        a, b = (np.asarray(item[m]) for m in ("a", "b"))
        if a.shape[-1] != len(labels) or b.shape[-1] != len(labels):
            raise ValueError(f"task {k}: predictions and labels differ in length")
        if len(a) != len(b):
            raise ValueError(f"task {k}: {len(a)} seeds of A and {len(b)} of B cannot be paired")
        teachers = item.get("teachers")
        if teachers is not None and len(teachers) != len(a):
            raise ValueError(f"task {k}: {len(teachers)} teachers named for {len(a)} seeds")
        d = gap_table(item)
        g = crossed_gap(d)
        observed = np.mean([metric_value(item["metric"], labels, p) for p in a]) - \
            np.mean([metric_value(item["metric"], labels, p) for p in b])  # the metric's own gap (= g.gap for accuracy)
        gaps.append(float(observed))
        variances.append(g.variance)
        dfs.append(g.df)
        n_teachers.append(d.shape[0] if d.shape[1] > 1 or teachers else 1)
        n_seeds.append(len(a))
    K = len(tasks)
    gap, var = float(np.mean(gaps)), float(np.sum(variances) / K ** 2)
    df = float(np.sum(variances) ** 2 / np.sum([v ** 2 / f for v, f in zip(variances, dfs)])) if var > 0 \
        else float(min(dfs))
    se = np.sqrt(var)
    half = float(stats.t.ppf(0.5 + level / 2, df) * se)
    p = float(2 * stats.t.sf(abs(gap) / se, df)) if se > 0 else (1.0 if gap == 0 else 0.0)
    return Comparison(gap, gap - half, gap + half, p, K, min(n_seeds), 0, min(n_teachers), df)
