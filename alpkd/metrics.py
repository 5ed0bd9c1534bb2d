"""GLUE metrics, computed with scikit-learn and SciPy."""
from __future__ import annotations

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from .tasks import Task


def metric_value(name: str, labels: np.ndarray, preds: np.ndarray) -> float:
    if name == "accuracy":
        return accuracy_score(labels, preds)
    if name == "f1":
        return f1_score(labels, preds)
    if name == "matthews":
        return matthews_corrcoef(labels, preds)
    if name == "pearson":
        return pearsonr(preds, labels)[0]
    if name == "spearman":
        return spearmanr(preds, labels)[0]
    raise ValueError(f"unknown metric {name!r}")


def predictions(task: Task, logits: np.ndarray) -> np.ndarray:
    """Class ids for classification, the score for regression."""
    logits = np.asarray(logits)
    return logits.reshape(-1) if task.is_regression else logits.argmax(-1)


def compute(task: Task, logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Every GLUE metric of `task`, as floats in [−1, 1] (not percentages)."""
    preds = predictions(task, logits)
    labels = np.asarray(labels)
    return {m: float(metric_value(m, labels, preds)) for m in task.metrics}


def trivial_predictions(task: Task, train_labels, n: int) -> np.ndarray:
    """What a predictor that ignores the input answers for `n` examples: the training set's majority class
    (the smallest id on a tie), or for regression its mean label."""
    train_labels = np.asarray(train_labels)
    if task.is_regression:
        return np.full(n, float(train_labels.mean()))
    return np.full(n, int(np.bincount(train_labels.astype(int), minlength=task.num_labels).argmax()))


def trivial_scores(task: Task, train_labels, labels) -> dict[str, float]:
    """Every metric of the trivial predictor on `labels`. A correlation with a constant is undefined: NaN."""
    labels = np.asarray(labels)
    preds = trivial_predictions(task, train_labels, len(labels))
    with np.errstate(invalid="ignore", divide="ignore"):
        return {m: (float("nan") if m in ("pearson", "spearman") else float(metric_value(m, labels, preds)))
                for m in task.metrics}


def is_constant(preds) -> bool:
    """True when a model gave every validation example the same prediction (it learnt nothing from the input)."""
    preds = np.asarray(preds)
    return bool(len(preds) == 0 or np.all(preds == preds.flat[0]))
