"""GLUE metrics, computed with scikit-learn and SciPy."""
from __future__ import annotations

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from .tasks import Task


def _metric(name: str, labels: np.ndarray, preds: np.ndarray) -> float:
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
    return {m: float(_metric(m, labels, preds)) for m in task.metrics}
