"""The paired bootstrap against independent computations (SciPy, hand-written resampling)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import f1_score

from alpkd.significance import paired_bootstrap, seed_resamples


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


# --- the teacher as a source of variance: the two-stage (hierarchical) bootstrap -------------------------------
def _scored_task(gaps, n=1000, base=0.7):
    """A task whose seed k has accuracy `base` for B and `base + gaps[k]` for A, exactly, on n examples (A right on
    the examples B gets right, plus the next gaps[k] * n), so each seed's gap is known without noise."""
    labels = np.zeros(n, dtype=int)
    b_right = round(base * n)
    a, b = [], []
    for g in gaps:
        pa, pb = np.ones(n, dtype=int), np.ones(n, dtype=int)
        pb[:b_right] = 0
        pa[:b_right + round(g * n)] = 0
        a.append(pa)
        b.append(pb)
    return {"metric": "accuracy", "labels": labels, "a": a, "b": b}


def test_seed_resamples_draw_teachers_then_their_students():
    rng = np.random.default_rng(0)
    teachers = [42, 43, 44, 42, 43, 44]  # the pipeline's pairing: seed k learns from teacher k mod 3
    idx = seed_resamples(rng, 2000, 6, teachers)
    assert idx.shape == (2000, 6)
    groups = np.asarray(teachers)[idx].reshape(2000, 3, 2)
    assert (groups[..., 0] == groups[..., 1]).all()  # each pair of draws: two students of one teacher
    # a teacher is drawn k times out of 3 with binomial(3, 1/3) probabilities
    counts = (np.asarray(teachers)[idx] == 42).sum(axis=1) // 2
    freq = np.bincount(counts, minlength=4) / 2000
    np.testing.assert_allclose(freq, stats.binom.pmf(range(4), 3, 1 / 3), atol=0.03)
    with pytest.raises(ValueError, match="unequal numbers of students"):
        seed_resamples(rng, 10, 3, [1, 1, 2])


def test_two_stage_variance_matches_the_closed_form():
    # independent computation: Var* = V_between / T + mean_t(V_within_t) / (n T), population variances
    per_teacher = {1: [0.05, 0.03, 0.04, 0.06], 2: [-0.01, 0.0, 0.01, -0.02], 3: [0.02, 0.04, 0.03, 0.03]}
    teachers = [t for t, g in per_teacher.items() for _ in g]
    gaps = [x for g in per_teacher.values() for x in g]
    task = _scored_task(gaps) | {"teachers": teachers}
    T, n = 3, 4
    means = np.array([np.mean(g) for g in per_teacher.values()])
    expected = means.var() / T + np.mean([np.var(g) for g in per_teacher.values()]) / (n * T)
    r = paired_bootstrap([task], resamples=40000, resample_seeds=True, resample_examples=False)
    assert r.gap == pytest.approx(np.mean(gaps))
    assert r.n_teachers == 3
    spread = ((r.high - r.low) / (2 * 1.96)) ** 2  # the percentile interval of a near-normal distribution
    assert spread == pytest.approx(expected, rel=0.15)
    # the teacher-blind bootstrap of the same seeds sees only the pooled variance / 12: smaller here
    blind = paired_bootstrap([{k: v for k, v in task.items() if k != "teachers"}], resamples=40000,
                             resample_seeds=True, resample_examples=False)
    assert ((blind.high - blind.low) / (2 * 1.96)) ** 2 == pytest.approx(np.var(gaps) / 12, rel=0.15)


def test_a_teacher_effect_fools_the_teacher_blind_bootstrap_and_not_the_hierarchical_one():
    # A beats B by 4 points with teacher 1's students and loses by 2 with teacher 2's: a teacher x method
    # interaction, not a method effect. Ten students per teacher with little spread make it look certain to a
    # bootstrap that resamples students as if each had its own teacher.
    rng = np.random.default_rng(5)
    per_teacher = {1: 0.04, 2: -0.02, 3: 0.02}
    teachers = [t for t in per_teacher for _ in range(10)]
    gaps = [per_teacher[t] + rng.normal(0, 0.003) for t in teachers]
    task = _scored_task(gaps, n=2000) | {"teachers": teachers}
    blind = paired_bootstrap([{k: v for k, v in task.items() if k != "teachers"}], resamples=4000,
                             resample_seeds=True)
    hierarchical = paired_bootstrap([task], resamples=4000, resample_seeds=True)
    assert blind.significant, blind
    assert not hierarchical.significant, hierarchical
    assert hierarchical.high - hierarchical.low > 2 * (blind.high - blind.low)


def test_a_method_effect_that_holds_for_every_teacher_is_still_found():
    rng = np.random.default_rng(6)
    teachers = [t for t in (1, 2, 3) for _ in range(2)]  # the default run's shape: 3 teachers x 2 students
    gaps = [0.03 + {1: 0.004, 2: -0.003, 3: 0.0}[t] + rng.normal(0, 0.003) for t in teachers]
    task = _scored_task(gaps, n=872) | {"teachers": teachers}
    r = paired_bootstrap([task], resamples=4000, resample_seeds=True)
    assert r.significant and r.low > 0, r
