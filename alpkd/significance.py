"""Is a gap between two methods more than noise? A paired bootstrap over validation examples.

RTE's 277 validation examples give one accuracy a standard error near 3 points, more than most gaps the
paper reports, so every comparison in the report comes with a p-value.

`paired_bootstrap` resamples the validation examples of each task with replacement (the same resample for
both methods: the comparison is paired) and, with `resample_seeds`, the training seeds too (seed k of A
paired with seed k of B: same initialisation and data order), recomputes each task's headline metric for
both methods (averaged over the drawn seeds), and averages the gap over tasks. Resampling the seeds makes
the interval cover the variation between training runs, not only the finite validation set. The
two-sided p-value is `min(1, 2 * min(P*(gap <= 0), P*(gap >= 0)))` under the bootstrap distribution P*.

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


def paired_bootstrap(
    tasks: list[dict],
    resamples: int = 1000,
    seed: int = 0,
    resample_seeds: bool = False,
) -> Comparison:
    """Compare methods A and B over tasks. Each item of `tasks`:

    `{"metric": "accuracy", "labels": (N,), "a": [preds of seed 1, ...], "b": [preds of seed 1, ...]}`
    (the predictions of each seed of A and of B on the same N validation examples, in the same order).
    With `resample_seeds`, A and B need the same number of seeds (paired in order).
    """
    rng = np.random.default_rng(seed)
    observed, boot = [], np.zeros((resamples, len(tasks)))
    for t, item in enumerate(tasks):
        labels = np.asarray(item["labels"])
        a, b = (np.asarray(item[k]) for k in ("a", "b"))
        n = len(labels)
        if a.shape[-1] != n or b.shape[-1] != n:
            raise ValueError(f"task {t}: predictions and labels differ in length")
        if resample_seeds and len(a) != len(b):
            raise ValueError(f"task {t}: {len(a)} seeds of A and {len(b)} of B cannot be paired")
        full = np.arange(n)[None]
        idx = rng.integers(0, n, (resamples, n))
        seeds = rng.integers(0, len(a), (resamples, len(a))) if resample_seeds else None

        def per_seed(preds, rows):  # (rows, seeds): the metric of every seed on every resample
            return np.stack([_resampled(item["metric"], labels, p, rows) for p in preds], axis=1)

        observed.append(float(per_seed(a, full).mean() - per_seed(b, full).mean()))
        sa, sb = per_seed(a, idx), per_seed(b, idx)
        if seeds is not None:
            sa, sb = np.take_along_axis(sa, seeds, axis=1), np.take_along_axis(sb, seeds, axis=1)
        boot[:, t] = sa.mean(axis=1) - sb.mean(axis=1)
    gaps = np.nan_to_num(boot.mean(axis=1))  # a degenerate resample (constant predictions) counts as no gap
    p = min(1.0, 2 * min(np.mean(gaps <= 0), np.mean(gaps >= 0)))
    low, high = np.percentile(gaps, [2.5, 97.5])
    seeds = min(min(len(item["a"]), len(item["b"])) for item in tasks)
    return Comparison(float(np.mean(observed)), float(low), float(high), float(p), len(tasks), seeds, resamples)
