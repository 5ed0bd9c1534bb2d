"""alpkd.metrics and the task registry against scikit-learn and SciPy called here directly."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from alpkd import metrics
from alpkd.tasks import GLUE_TASKS, get_task

# GLUE's conventions (DESIGN.md): the metrics of each task, and its number of outputs (1 = regression)
EXPECTED = {
    "cola": ({"matthews"}, 2),
    "sst2": ({"accuracy"}, 2),
    "mrpc": ({"f1", "accuracy"}, 2),
    "stsb": ({"pearson", "spearman"}, 1),
    "qqp": ({"f1", "accuracy"}, 2),
    "mnli": ({"accuracy"}, 3),
    "qnli": ({"accuracy"}, 2),
    "rte": ({"accuracy"}, 2),
}


# each metric as scikit-learn / SciPy define it, called as (labels, predictions)
REFERENCE = {
    "accuracy": accuracy_score,
    "f1": f1_score,
    "matthews": matthews_corrcoef,
    "pearson": lambda y, p: pearsonr(p, y).statistic,
    "spearman": lambda y, p: spearmanr(p, y).statistic,
}


def test_the_eight_paper_tasks_exist():
    assert set(GLUE_TASKS) == set(EXPECTED)
    assert GLUE_TASKS["mnli"].validation_splits == ("validation_matched", "validation_mismatched")
    for name, task in GLUE_TASKS.items():
        assert set(task.metrics) == EXPECTED[name][0], name
        assert task.num_labels == EXPECTED[name][1], name
        assert task.headline in task.metrics, name
        assert task.is_regression == (name == "stsb")
        if name != "mnli":
            assert task.validation_splits == ("validation",)


def test_get_task_unknown():
    assert get_task("rte") is GLUE_TASKS["rte"]
    with pytest.raises(ValueError, match="wnli"):
        get_task("wnli")


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_compute_matches_sklearn_scipy(name, seed):
    rng = np.random.default_rng(seed)
    task = GLUE_TASKS[name]
    n = 200
    if task.is_regression:
        labels = rng.uniform(0, 5, size=n)
        logits = (labels + rng.normal(scale=2.0, size=n))[:, None]  # (N, 1), correlated with the labels
        preds = logits[:, 0]
    else:
        labels = rng.integers(0, task.num_labels, size=n)
        logits = rng.normal(size=(n, task.num_labels))
        logits[np.arange(n), labels] += rng.uniform(0, 1.5, size=n)  # better than chance, not perfect
        preds = np.array([int(np.argmax(row)) for row in logits])
    got = metrics.compute(task, logits, labels)
    assert set(got) == EXPECTED[name][0]
    for metric, value in got.items():
        assert isinstance(value, float)
        assert value == pytest.approx(REFERENCE[metric](labels, preds), abs=1e-12), metric
    assert got[task.headline] == pytest.approx(REFERENCE[task.headline](labels, preds), abs=1e-12)


def test_predictions_are_argmax_or_score():
    logits = np.array([[0.1, 0.9, 0.0], [2.0, -1.0, 1.0]])
    assert metrics.predictions(GLUE_TASKS["mnli"], logits).tolist() == [1, 0]
    assert metrics.predictions(GLUE_TASKS["stsb"], np.array([[1.5], [3.0]])).tolist() == [1.5, 3.0]


# --- the trivial predictor and the constant-predictor flag -----------------------------------------------
def test_trivial_classification_is_the_training_majority():
    from sklearn.dummy import DummyClassifier

    rng = np.random.default_rng(3)
    task = GLUE_TASKS["mrpc"]
    train, val = rng.choice(2, 500, p=[0.3, 0.7]), rng.choice(2, 200, p=[0.4, 0.6])
    dummy = DummyClassifier(strategy="most_frequent").fit(np.zeros((len(train), 1)), train)
    expected = dummy.predict(np.zeros((len(val), 1)))
    got = metrics.trivial_scores(task, train, val)
    assert got == {"f1": pytest.approx(f1_score(val, expected)), "accuracy": pytest.approx(accuracy_score(val, expected))}
    # CoLA's Matthews correlation of a constant is 0 (sklearn's convention), not NaN
    assert metrics.trivial_scores(GLUE_TASKS["cola"], train, val) == {"matthews": 0.0}


def test_trivial_regression_is_the_mean_and_its_correlation_undefined():
    rng = np.random.default_rng(4)
    train, val = rng.uniform(0, 5, 300), rng.uniform(0, 5, 100)
    preds = metrics.trivial_predictions(GLUE_TASKS["stsb"], train, len(val))
    assert np.all(preds == pytest.approx(train.mean()))
    got = metrics.trivial_scores(GLUE_TASKS["stsb"], train, val)
    assert set(got) == {"pearson", "spearman"} and all(np.isnan(v) for v in got.values())


def test_is_constant():
    assert metrics.is_constant([1, 1, 1]) and metrics.is_constant(np.full(4, 2.5))
    assert not metrics.is_constant([0, 1, 1]) and not metrics.is_constant([2.5, 2.5000001])
