"""Do the 95% intervals cover the true gap 95% of the time? Simulated runs with known variance components.

Two kinds of simulated run, each with the design of the pipeline (T teachers, n students each, N shared
sentences):
- Gaussian per-sentence gaps with a known mean gap and known components (teacher, student, sentence,
  teacher x sentence, residual): `crossed_gap`'s interval must cover the gap in 93-97% of runs in every setting;
- right/wrong predictions of two exchangeable methods (true gap 0 by symmetry): the new `crossed_comparison` and
  the earlier `paired_bootstrap` on the same runs, to show what the new one fixes: the bootstrap over-covers where
  the seed x sentence noise dominates and under-covers where three teachers dominate.

`python tests/test_coverage.py` prints the coverage table quoted in docs/statistics.md.
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from alpkd.significance import crossed_comparison, crossed_gap, mean_squares, paired_bootstrap

GAP = 0.7
# standard deviations of the components: teacher, student (within teacher), sentence, teacher x sentence, residual
SETTINGS = {
    "teacher-heavy": (1.0, 0.1, 0.2, 0.2, 1.0),
    "student-heavy": (0.1, 1.0, 0.2, 0.2, 1.0),
    "sentence-heavy": (0.05, 0.05, 2.0, 0.2, 1.0),
    "interaction-heavy": (0.05, 0.05, 0.2, 1.0, 5.0),
}


def gaussian_coverage(sd, T, n, N=100, runs=2000, seed=0) -> float:
    """Share of `runs` simulated tables whose t interval from `crossed_gap` covers GAP."""
    rng = np.random.default_rng(seed)
    a, b, g, ag, e = sd
    hits = 0
    for _ in range(runs):
        d = (GAP + a * rng.standard_normal((T, 1, 1)) + b * rng.standard_normal((T, n, 1))
             + g * rng.standard_normal((1, 1, N)) + ag * rng.standard_normal((T, 1, N))
             + e * rng.standard_normal((T, n, N)))
        r = crossed_gap(d)
        hits += abs(r.gap - GAP) <= stats.t.ppf(0.975, r.df) * np.sqrt(r.variance)
    return hits / runs


def binary_run(rng, T, n, N, teacher_sd, sentence_sd, student_sd=0.0):
    """Predictions of two exchangeable methods (so the true gap is 0): each method's probability of being right
    on a sentence is a probit of its sentence difficulty plus its teacher's and its student's effects."""
    labels = np.zeros(N, dtype=int)
    preds = {}
    for m in ("a", "b"):
        z = (1.0 + sentence_sd * rng.standard_normal((1, 1, N)) + teacher_sd * rng.standard_normal((T, 1, 1))
             + student_sd * rng.standard_normal((T, n, 1)))
        right = rng.random((T, n, N)) < stats.norm.cdf(z)
        preds[m] = list(np.where(right, 0, 1).reshape(T * n, N))
    return {"metric": "accuracy", "labels": labels, "teachers": [t for t in range(T) for _ in range(n)], **preds}


def binary_coverage(T, n, N, teacher_sd, sentence_sd, runs, bootstrap_runs, seed=0) -> tuple[float, float]:
    """(coverage of 0 by crossed_comparison over `runs`, by paired_bootstrap over the first `bootstrap_runs`)."""
    rng = np.random.default_rng(seed)
    new = old = 0
    for i in range(runs):
        task = binary_run(rng, T, n, N, teacher_sd, sentence_sd)
        c = crossed_comparison([task])
        new += c.low <= 0 <= c.high
        if i < bootstrap_runs:
            b = paired_bootstrap([task], resamples=500, seed=i, resample_seeds=True)
            old += b.low <= 0 <= b.high
    return new / runs, old / max(bootstrap_runs, 1)


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("T,n", [(3, 2), (10, 2), (3, 1), (10, 1)])
def test_crossed_intervals_cover_the_true_gap(setting, T, n):
    coverage = gaussian_coverage(SETTINGS[setting], T, n)
    assert 0.93 <= coverage <= 0.97, f"{setting}, {T} teachers x {n}: coverage {coverage:.3f}"


def test_binary_runs_the_new_intervals_cover_and_the_bootstrap_does_not():
    # seed x sentence noise alone (every student right with probability ~0.84): the bootstrap counts it ~3 times
    new, old = binary_coverage(T=3, n=2, N=200, teacher_sd=0.0, sentence_sd=0.0, runs=1000, bootstrap_runs=300)
    assert 0.93 <= new <= 0.97, new
    assert old > 0.98, f"the bootstrap was expected to over-cover here, covered {old:.3f}"
    # three teachers carry most of the variance: the bootstrap's normal interval with (T-1)/T shrinkage is short
    new, old = binary_coverage(T=3, n=2, N=200, teacher_sd=0.3, sentence_sd=0.0, runs=1000, bootstrap_runs=300, seed=1)
    assert 0.93 <= new <= 0.97, new
    assert old < 0.90, f"the bootstrap was expected to under-cover here, covered {old:.3f}"


def test_mean_squares_equal_a_hand_written_anova():
    rng = np.random.default_rng(7)
    T, n, N = 3, 2, 5
    d = rng.standard_normal((T, n, N))
    grand = d.mean()
    t_mean = [d[t].mean() for t in range(T)]
    s_mean = [[d[t, s].mean() for s in range(n)] for t in range(T)]
    j_mean = [d[:, :, j].mean() for j in range(N)]
    tj_mean = [[d[t, :, j].mean() for j in range(N)] for t in range(T)]
    ss_t = sum(n * N * (t_mean[t] - grand) ** 2 for t in range(T))
    ss_s = sum(N * (s_mean[t][s] - t_mean[t]) ** 2 for t in range(T) for s in range(n))
    ss_j = sum(T * n * (j_mean[j] - grand) ** 2 for j in range(N))
    ss_tj = sum(n * (tj_mean[t][j] - t_mean[t] - j_mean[j] + grand) ** 2 for t in range(T) for j in range(N))
    ss_total = ((d - grand) ** 2).sum()
    ms = mean_squares(d)
    assert ms["teacher"] == (pytest.approx(ss_t / (T - 1)), T - 1)
    assert ms["student"] == (pytest.approx(ss_s / (T * (n - 1))), T * (n - 1))
    assert ms["sentence"] == (pytest.approx(ss_j / (N - 1)), N - 1)
    assert ms["teacher x sentence"] == (pytest.approx(ss_tj / ((T - 1) * (N - 1))), (T - 1) * (N - 1))
    # the five sums of squares partition the total
    total = sum(m * df for m, df in ms.values())
    assert total == pytest.approx(ss_total)


def test_teacher_only_variance_is_the_teacher_means_t_test():
    # no sentence component: the interval is the one-sample t interval of the teacher means (T - 1 df)
    rng = np.random.default_rng(8)
    d = np.repeat(rng.standard_normal((4, 1, 1)), 3, axis=1) + 0.0 * rng.standard_normal((4, 3, 6))
    d = d + np.linspace(-1, 1, 6)[None, None] * 0  # sentences identical
    r = crossed_gap(d)
    means = d.mean(axis=(1, 2))
    ref = stats.ttest_1samp(means, 0)
    assert r.df == pytest.approx(3)
    assert r.gap / np.sqrt(r.variance) == pytest.approx(ref.statistic)


def test_one_student_is_a_paired_t_test_over_sentences():
    rng = np.random.default_rng(9)
    labels = rng.integers(0, 2, 300)
    a, b = (np.where(rng.random(300) < p, labels, 1 - labels) for p in (0.8, 0.7))
    c = crossed_comparison([{"metric": "accuracy", "labels": labels, "a": [a], "b": [b]}])
    diff = (a == labels).astype(float) - (b == labels).astype(float)
    ref = stats.ttest_1samp(diff, 0)
    assert c.p_value == pytest.approx(ref.pvalue)
    low, high = ref.confidence_interval()
    assert (c.low, c.high) == (pytest.approx(low), pytest.approx(high))


def test_pseudo_values_of_a_non_additive_metric_average_near_it():
    from sklearn.metrics import f1_score

    from alpkd.significance import pseudo_values

    rng = np.random.default_rng(10)
    labels = rng.integers(0, 2, 200)
    preds = np.where(rng.random(200) < 0.8, labels, 1 - labels)
    ps = pseudo_values("f1", labels, preds)
    assert ps.mean() == pytest.approx(f1_score(labels, preds), abs=0.01)


if __name__ == "__main__":
    print("| setting | teachers x students | coverage of the crossed t interval |")
    print("|---|---|---:|")
    for name, sd in SETTINGS.items():
        for T, n in [(3, 2), (10, 2), (3, 1), (10, 1)]:
            print(f"| {name} | {T} x {n} | {gaussian_coverage(sd, T, n):.3f} |")
    print()
    print("| right/wrong runs, 3 teachers x 2 students, 200 sentences | crossed t | earlier bootstrap |")
    print("|---|---:|---:|")
    for name, tsd, seed in (("seed x sentence noise only", 0.0, 0), ("teachers dominate", 0.3, 1)):
        new, old = binary_coverage(3, 2, 200, tsd, 0.0, runs=1000, bootstrap_runs=300, seed=seed)
        print(f"| {name} | {new:.3f} | {old:.3f} |")
