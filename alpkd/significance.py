"""Is a gap between two methods more than noise? A paired, hierarchical bootstrap.

RTE's 277 validation examples give one accuracy a standard error near 3 points, more than most gaps the
paper reports, so every comparison in the report comes with a p-value. And every student learns from one
teacher: a verdict must hold for other teachers too, not only for the one this machine happened to draw.

`paired_bootstrap` resamples, for each task, the three sources of variation the design has:
- **teachers** (`teachers`: the teacher of each seed): the teachers with replacement, then, within each teacher
  drawn, its students with replacement (a two-stage bootstrap; every teacher has the same number of students);
- **student seeds** (`resample_seeds`): without `teachers`, the seeds with replacement as if independent (the
  teacher-blind bootstrap: right only when all students share one teacher and the verdict is about it);
- **validation examples** (`resample_examples`, on by default): the same resample for both methods.
Seed k of A is paired with seed k of B (same teacher, initialisation and data order). Each task's headline
metric is recomputed for both methods on every resample (averaged over the drawn seeds) and the gap is
averaged over tasks. The two-sided p-value is `min(1, 2 * min(P*(gap <= 0), P*(gap >= 0)))` under the bootstrap
distribution P*.

With T teachers of n students each and the examples held fixed, the two-stage bootstrap's variance of a
task's mean gap is `V_between / T + mean_t(V_within_t) / (n T)` (population variances of the teachers' mean
gaps and of the gaps within each teacher); the tests check the resampling against that formula.

`adjust` corrects a family of p-values for the number of comparisons (Benjamini-Hochberg, from SciPy).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .metrics import _metric


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
    return np.array([_metric(metric, y[r], p[r]) for r in range(len(idx))])  # correlations, multiclass MCC


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
