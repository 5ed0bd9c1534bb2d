"""The paired bootstrap against independent computations (SciPy, hand-written resampling)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import f1_score

from alpkd.significance import paired_bootstrap


def _task(rng, n, acc_a, acc_b, metric="accuracy", seeds=1):
    labels = rng.integers(0, 2, n)
    flip = lambda acc: np.where(rng.random(n) < acc, labels, 1 - labels)  # noqa: E731
    return {"metric": metric, "labels": labels, "a": [flip(acc_a) for _ in range(seeds)],
            "b": [flip(acc_b) for _ in range(seeds)]}


def test_observed_gap_is_the_metric_difference():
    rng = np.random.default_rng(1)
    tasks = [_task(rng, 300, 0.8, 0.6), _task(rng, 200, 0.7, 0.7, metric="f1", seeds=3)]
    result = paired_bootstrap(tasks, resamples=50)
    t0, t1 = tasks
    gap0 = np.mean(t0["a"][0] == t0["labels"]) - np.mean(t0["b"][0] == t0["labels"])
    gap1 = np.mean([f1_score(t1["labels"], p) for p in t1["a"]]) - np.mean([f1_score(t1["labels"], p) for p in t1["b"]])
    assert result.gap == pytest.approx((gap0 + gap1) / 2)
    assert result.n_tasks == 2 and result.n_seeds == 1


def test_interval_matches_scipy_paired_bootstrap_for_accuracy():
    # for accuracy, the gap is the mean of per-example differences of correctness: scipy can bootstrap that
    rng = np.random.default_rng(2)
    task = _task(rng, 400, 0.75, 0.65)
    diff = (task["a"][0] == task["labels"]).astype(float) - (task["b"][0] == task["labels"]).astype(float)
    ref = stats.bootstrap((diff,), np.mean, n_resamples=4000, method="percentile", random_state=0).confidence_interval
    ours = paired_bootstrap([task], resamples=4000)
    assert ours.low == pytest.approx(ref.low, abs=0.01)
    assert ours.high == pytest.approx(ref.high, abs=0.01)


def test_p_value_agrees_with_a_paired_test_in_the_clear_cases():
    rng = np.random.default_rng(3)
    same = _task(rng, 277, 0.6, 0.6)
    same["b"] = [p.copy() for p in same["a"]]
    assert paired_bootstrap([same], resamples=200).p_value == 1.0  # identical predictions: no evidence
    clear = _task(rng, 277, 0.95, 0.5)
    result = paired_bootstrap([clear], resamples=500)
    diff = (clear["a"][0] == clear["labels"]).astype(float) - (clear["b"][0] == clear["labels"]).astype(float)
    assert stats.ttest_1samp(diff, 0).pvalue < 1e-6
    assert result.p_value < 0.01 and result.significant
    assert result.low > 0


def test_small_gap_on_rte_sized_data_is_noise():
    # a 1-point gap on 277 examples is within noise: the paired test must not call it significant
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 2, 277)
    a = labels.copy()
    a[:80] = 1 - a[:80]  # 197/277 right
    b = labels.copy()
    b[3:86] = 1 - b[3:86]  # 194/277 right, errors mostly shared with a
    result = paired_bootstrap([{"metric": "accuracy", "labels": labels, "a": [a], "b": [b]}], resamples=1000)
    assert result.gap == pytest.approx(3 / 277)
    assert not result.significant
    # and the bootstrap p agrees with McNemar's exact test on the discordant pairs, roughly
    only_a = int(np.sum((a == labels) & (b != labels)))
    only_b = int(np.sum((a != labels) & (b == labels)))
    mcnemar = stats.binomtest(only_a, only_a + only_b).pvalue
    assert mcnemar > 0.05


def test_lengths_are_checked():
    with pytest.raises(ValueError, match="differ in length"):
        paired_bootstrap([{"metric": "accuracy", "labels": [0, 1], "a": [[0, 1, 1]], "b": [[0, 1]]}])


@pytest.mark.parametrize("metric", ["f1", "matthews", "accuracy"])
def test_counting_formulas_equal_sklearn_on_every_resample(metric):
    from sklearn.metrics import accuracy_score, matthews_corrcoef

    from alpkd.significance import _resampled

    ref = {"f1": f1_score, "matthews": matthews_corrcoef, "accuracy": accuracy_score}[metric]
    rng = np.random.default_rng(5)
    labels, preds = rng.integers(0, 2, 60), rng.integers(0, 2, 60)
    idx = rng.integers(0, 60, (200, 60))
    idx[0] = np.flatnonzero(labels == 0)[0]  # a degenerate resample: one class only
    with np.errstate(all="ignore"):
        expected = [ref(labels[r], preds[r]) for r in idx]
    np.testing.assert_allclose(_resampled(metric, labels, preds, idx), expected, atol=1e-12)
