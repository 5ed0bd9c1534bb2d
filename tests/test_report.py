"""alpkd.report: the results table against metrics files written by hand, numbers recomputed with numpy."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import REPO  # noqa: F401 - makes the checkout importable, offline settings

TASKS = {"rte": "accuracy", "mrpc": "f1"}
DEPTHS = [2, 1]
METHODS = ["kd", "alp", "alp_no"]
SEEDS = [1, 2, 3]
MISSING = ("mrpc", 1, "alp_no", 3)  # one run of the grid has no metrics file
TEACHER_SEEDS = [42, 43, 44]  # student seed k learns from teacher k (3 teachers, 3 students: one each)
TEACHER = {"rte": [0.6534, 0.6612, 0.6401], "mrpc": [0.8812, 0.8790, 0.8855]}
TRIVIAL = {"rte": 0.527, "mrpc": 0.812}
PLUS_MINUS = "\u00b1"
N_EVAL = 40  # validation examples per task in the hand-written predictions


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def record(task, depth, method, seed, score, role="student"):
    rec = {"task": task, "role": role, "method": method, "depth": depth, "seed": seed, "headline": TASKS.get(task, "x"),
           "score": score, "metrics": {TASKS.get(task, "x"): score}, "profile": "handmade",
           "data_source": "ALPKD_GLUE_DIR (a local copy of nyu-mll/glue)"}
    if role == "teacher":
        rec["model"] = "tiny"
        rec["trivial"] = {TASKS.get(task, "x"): TRIVIAL.get(task)}
    else:
        rec["teacher_layers"] = 4
        rec["teacher_seed"] = TEACHER_SEEDS[SEEDS.index(seed)] if seed in SEEDS else 42
    return rec


@pytest.fixture
def params(smoke_raw):
    from alpkd import config

    smoke_raw["profile"] = "handmade"
    smoke_raw["data"]["tasks"] = list(TASKS)
    smoke_raw["student"]["depths"] = DEPTHS
    smoke_raw["distill"]["methods"] = METHODS
    smoke_raw["distill"]["seeds"] = SEEDS
    smoke_raw["teacher"]["seeds"] = TEACHER_SEEDS
    return config.validate(smoke_raw)


@pytest.fixture
def root(tmp_path):
    """Metrics, attention maps and logs of a 2-task grid, plus files the report must ignore."""
    rng = np.random.default_rng(0)
    ce_rng = np.random.default_rng(1)  # the task-loss curves, drawn apart so the other values stay as they were
    scores = {}
    (tmp_path / "logs").mkdir()
    labels = {task: rng.integers(0, 2, N_EVAL) for task in TASKS}
    for task in TASKS:
        for seed, score in zip(TEACHER_SEEDS, TEACHER[task]):
            write_json(tmp_path / "metrics" / "teacher" / task / f"s{seed}.json",
                       record(task, 4, "teacher", seed, score, role="teacher"))
        for depth in DEPTHS:
            for method in METHODS:
                for seed in SEEDS:
                    if (task, depth, method, seed) == MISSING:
                        continue
                    score = float(rng.uniform(0.4, 0.9))
                    scores[(task, depth, method, seed)] = score
                    cell, run = f"{task}-{depth}/{method}", f"s{seed}"
                    write_json(tmp_path / "metrics" / "students" / cell / f"{run}.json",
                               record(task, depth, method, seed, score))
                    weights = None
                    if method.startswith("alp"):
                        w = rng.uniform(size=(depth, 4))
                        weights = (w / w.sum(axis=1, keepdims=True)).tolist()
                    write_json(tmp_path / "attention" / cell / f"{run}.json",
                               {"task": task, "depth": depth, "method": method, "seed": seed, "weights": weights,
                                "entropy_bits": None if weights is None else [1.0] * depth})
                    (tmp_path / "logs" / cell).mkdir(parents=True, exist_ok=True)
                    pd.DataFrame({"step": [1, 2, 3], "loss": rng.uniform(size=3), "loss_ce": ce_rng.uniform(size=3)}).to_csv(
                        tmp_path / "logs" / cell / f"{run}.csv", index=False)
                    preds = np.where(rng.random(N_EVAL) < score, labels[task], 1 - labels[task])
                    write_json(tmp_path / "predictions" / cell / f"{run}.json",
                               {"task": task, "validation": {"labels": labels[task].tolist(),
                                                             "predictions": preds.tolist()}})
    # outside the configured grid: another task, another seed, another method; and a damaged file
    write_json(tmp_path / "metrics" / "students" / "cola-1" / "kd" / "s1.json", record("cola", 1, "kd", 1, 0.01))
    write_json(tmp_path / "metrics" / "students" / "rte-1" / "kd" / "s99.json", record("rte", 1, "kd", 99, 0.01))
    write_json(tmp_path / "metrics" / "students" / "rte-1" / "pkd" / "s1.json", record("rte", 1, "pkd", 1, 0.01))
    (tmp_path / "metrics" / "students" / "rte-2" / "kd" / "s7.json").write_text('{"task": "rte", "sco')
    return Grid(tmp_path, scores)


class Grid(type(Path())):
    """The output root, carrying the scores written into it."""

    def __new__(cls, path, scores):
        self = super().__new__(cls, path)
        self.scores = scores
        return self


def expected_cell(values) -> str:
    values = np.asarray(values, dtype=float) * 100
    if len(values) == 1:
        return f"{values.mean():.1f}"
    return f"{values.mean():.1f} {PLUS_MINUS} {values.std(ddof=1):.1f}"


def table_rows(md: str) -> dict[tuple[str, str], list[str]]:
    """The markdown table as {(layers, method): [cells]} (independent of the library's parser)."""
    rows = {}
    table = md.split("| layers |", 1)[1].split("\n\n", 1)[0]  # the first table
    for line in table.splitlines()[3:]:  # after the header, the rule and the trivial row
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[(cells[0], cells[1])] = cells[2:]
    return rows


LABEL = {"kd": "KD", "alp": "ALP", "alp_no": "ALP-NO"}


def test_table_matches_numpy(params, root):
    from alpkd import report

    report.write_report(params, root)
    md = (root / "report" / "results.md").read_text()
    rows = table_rows(md)
    scores = root.scores
    assert list(rows) == [("4", "teacher")] + [(str(d), LABEL[m]) for d in DEPTHS for m in METHODS]
    teacher = rows[("4", "teacher")]
    assert teacher == [expected_cell(TEACHER["rte"]), expected_cell(TEACHER["mrpc"]),  # mean ± std over teachers
                       expected_cell(np.mean(list(TEACHER.values()), axis=0))]
    for depth in DEPTHS:
        for method in METHODS:
            cells = rows[(str(depth), LABEL[method])]
            for k, task in enumerate(TASKS):
                values = [scores[(task, depth, method, s)] for s in SEEDS if (task, depth, method, s) in scores]
                assert cells[k] == expected_cell(values), (depth, method, task)
            # average over tasks: per seed (seeds having every task), then over seeds
            per_seed = [np.mean([scores[(t, depth, method, s)] for t in TASKS]) for s in SEEDS
                        if all((t, depth, method, s) in scores for t in TASKS)]
            assert cells[-1] == expected_cell(per_seed), (depth, method, "average")


def test_header_names_what_produced_it(params, root):
    from alpkd import report

    result = report.write_report(params, root)
    md = (root / "report" / "results.md").read_text()
    assert "`handmade`" in md and "stale" not in md
    assert "ALPKD_GLUE_DIR (a local copy of nyu-mll/glue)" in md
    assert "tiny (4 layers)" in md
    assert "Teacher seeds: 42, 43, 44" in md and "student seeds: 1, 2, 3" in md
    assert "student 1 ← teacher 42, student 2 ← teacher 43, student 3 ← teacher 44" in md
    assert "rte (acc)" in md and "mrpc (F1)" in md
    assert result["missing"] == ["mrpc-1-alp_no-s3"]
    assert "`mrpc-1-alp_no-s3`" in md
    assert "cola" not in md.replace("a local copy", "") and "| PKD" not in md  # outside the grid


def test_numbers_files(params, root):
    from alpkd import report

    report.write_report(params, root)
    out = root / "report"
    scores = root.scores
    csv = pd.read_csv(out / "results.csv")
    assert list(csv.columns) == ["role", "layers", "method", "task", "mean", "std", "n_seeds", "n_nan", "n_constant"]
    row = csv[(csv.layers == 2) & (csv.method == "alp") & (csv.task == "mrpc")].iloc[0]
    values = np.array([scores[("mrpc", 2, "alp", s)] for s in SEEDS]) * 100
    assert row["mean"] == pytest.approx(values.mean(), abs=1e-4)
    assert row["std"] == pytest.approx(values.std(ddof=1), abs=1e-4)
    assert row["n_seeds"] == 3
    missing_row = csv[(csv.layers == 1) & (csv.method == "alp_no") & (csv.task == "mrpc")].iloc[0]
    assert missing_row["n_seeds"] == 2

    long = pd.read_csv(out / "scores.csv")
    assert list(long.columns) == ["task", "depth", "method", "score", "std"]
    assert set(long.task) == {"rte", "mrpc", "average"}
    assert len(long) == len(DEPTHS) * len(METHODS) * 3
    wide = pd.read_csv(out / "scores_by_depth.csv")
    assert list(wide.columns) == ["depth", *METHODS]
    assert sorted(wide.depth) == sorted(DEPTHS)

    summary = json.loads((out / "summary.json").read_text())
    assert summary["teacher"]["rte"] == pytest.approx(np.mean(TEACHER["rte"]) * 100, abs=0.01)
    assert summary["trivial"]["mrpc"] == pytest.approx(TRIVIAL["mrpc"] * 100, abs=0.01)
    assert summary["students_2L"]["kd"] == pytest.approx(  # the average over tasks, per seed, then over seeds
        np.mean([np.mean([scores[(t, 2, "kd", s)] for t in TASKS]) for s in SEEDS]) * 100, abs=0.01)
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]  # atomic writes leave no temporary file


def test_figures(params, root):
    from alpkd import report

    (root / "report" / "figures").mkdir(parents=True)
    (root / "report" / "figures" / "attention_cola.png").write_bytes(b"stale")
    result = report.write_report(params, root)
    figures = sorted(p.name for p in (root / "report" / "figures").iterdir())
    assert figures == ["attention_mrpc.png", "attention_rte.png", "curves_mrpc.png", "curves_rte.png",
                       "scores_vs_depth.png"]  # no attention history in these hand-written maps
    for name in figures:
        assert (root / "report" / "figures" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert all(p.exists() for p in result["files"].values())


def test_single_seed_has_no_std(params, root, smoke_raw):
    from alpkd import config, report

    smoke_raw["profile"] = "handmade"
    smoke_raw["data"]["tasks"] = ["rte"]
    smoke_raw["student"]["depths"] = [2]
    smoke_raw["distill"]["methods"] = ["kd"]
    smoke_raw["distill"]["seeds"] = [2]
    smoke_raw["teacher"]["seeds"] = [43]  # one teacher: its row has no std either
    result = report.write_report(config.validate(smoke_raw), root)
    cells = table_rows((root / "report" / "results.md").read_text())[("2", "KD")]
    assert cells == [expected_cell([root.scores[("rte", 2, "kd", 2)]])] * 2
    assert PLUS_MINUS not in cells[0]
    assert result["missing"] == []


def test_stale_profile_is_flagged(params, root):
    from alpkd import report

    report.write_report(params.model_copy(update={"profile": "mini"}), root)
    assert "these results are stale" in (root / "report" / "results.md").read_text()


def test_empty_root(params, tmp_path):
    from alpkd import report

    result = report.write_report(params, tmp_path)
    md = (tmp_path / "report" / "results.md").read_text()
    assert "Teacher: none found" in md
    assert len(result["missing"]) == len(TASKS) * (len(TEACHER_SEEDS) + len(DEPTHS) * len(METHODS) * len(SEEDS))


def headline(metric: str, labels: np.ndarray, preds: np.ndarray) -> float:
    """Accuracy or F1 of the positive class, by hand."""
    if metric == "accuracy":
        return float(np.mean(preds == labels))
    tp = np.sum((preds == 1) & (labels == 1))
    return float(2 * tp / (2 * tp + np.sum((preds == 1) & (labels == 0)) + np.sum((preds == 0) & (labels == 1))))


def test_significance_gaps(params, root):
    from alpkd import report

    result = report.write_report(params, root)
    sig = pd.read_csv(root / "report" / "significance.csv")
    assert len(sig) == len(DEPTHS) * 2  # ALP and ALP-NO, each against KD (PKD is not in the grid)
    assert set(sig.baseline) == {"kd"} and set(sig.method) == {"alp", "alp_no"}

    def task_score(task, depth, method, seeds):
        values = []
        for seed in seeds:
            rec = json.loads((root / "predictions" / f"{task}-{depth}" / method / f"s{seed}.json").read_text())
            values.append(headline(TASKS[task], np.array(rec["validation"]["labels"]),
                                   np.array(rec["validation"]["predictions"])))
        return np.mean(values)

    for row in sig.itertuples():
        # paired by seed: only the seeds both methods have (mrpc, 1 layer, ALP-NO lacks seed 3)
        common = {t: [s for s in SEEDS if (t, row.layers, row.method, s) in root.scores] for t in TASKS}
        expected = np.mean([task_score(t, row.layers, row.method, common[t])
                            - task_score(t, row.layers, "kd", common[t]) for t in TASKS])
        assert row.gap == pytest.approx(100 * expected, abs=1e-3), row
        assert 0.0 <= row.p_value <= 1.0 and row.low <= row.high
        assert row.n_tasks == 2
        assert row.n_seeds == (2 if (row.layers, row.method) == (1, "alp_no") else 3)
    # Benjamini-Hochberg, by hand: p_(i) * m / i, made monotone from the largest down, capped at 1
    p = sig["p_value"].to_numpy()
    order = np.argsort(p)
    ranked = p[order] * len(p) / np.arange(1, len(p) + 1)
    expected_bh = np.empty_like(p)
    expected_bh[order] = np.minimum(1.0, np.minimum.accumulate(ranked[::-1])[::-1])
    np.testing.assert_allclose(sig["p_adjusted"], expected_bh, atol=1e-4)  # the CSV rounds to 4 decimals
    md = (root / "report" / "results.md").read_text()
    assert "ALP − KD" in md and "ALP-NO − KD" in md and "Satterthwaite" in md
    assert "Benjamini-Hochberg" in md and "95% half-width" in md
    assert len(result["significance"]) == len(sig)


def test_no_predictions_no_significance(params, root):
    import shutil

    from alpkd import report

    shutil.rmtree(root / "predictions")
    result = report.write_report(params, root)
    assert result["significance"].empty
    assert "more than noise" not in (root / "report" / "results.md").read_text()


def test_trivial_row(params, root):
    from alpkd import report

    report.write_report(params, root)
    md = (root / "report" / "results.md").read_text()
    trivial = [c.strip() for c in md.split("| – | trivial |", 1)[1].split("\n", 1)[0].strip(" |").split("|")]
    assert trivial == [f"{100 * TRIVIAL['rte']:.1f}", f"{100 * TRIVIAL['mrpc']:.1f}",
                       f"{100 * np.mean(list(TRIVIAL.values())):.1f}"]


def test_constant_and_undefined_scores_are_flagged(params, root):
    """A seed with constant predictions flags its cell; an undefined score (null, e.g. Pearson r of a constant)
    shows as NaN with its count, is left out of the mean, and makes that seed's average undefined."""
    from alpkd import report

    folder = root / "metrics" / "students"
    rec = json.loads((folder / "rte-2" / "kd" / "s1.json").read_text())
    rec["constant_predictions"] = True
    write_json(folder / "rte-2" / "kd" / "s1.json", rec)
    rec = json.loads((folder / "mrpc-2" / "alp" / "s2.json").read_text())
    rec["score"] = None
    write_json(folder / "mrpc-2" / "alp" / "s2.json", rec)
    report.write_report(params, root)
    rows = table_rows((root / "report" / "results.md").read_text())
    assert rows[("2", "KD")][0].endswith(report.FLAG) and not rows[("2", "KD")][1].endswith(report.FLAG)
    assert rows[("2", "KD")][2].endswith(report.FLAG)  # the average of a flagged seed is flagged too
    assert rows[("2", "ALP")][1] == f"NaN (1 of 3 seeds) {report.FLAG}"
    assert rows[("2", "ALP")][2] == f"NaN (1 of 3 seeds) {report.FLAG}"
    csv = pd.read_csv(root / "report" / "results.csv")
    row = csv[(csv.layers == 2) & (csv.method == "alp") & (csv.task == "mrpc")].iloc[0]
    kept = np.array([root.scores[("mrpc", 2, "alp", s)] for s in (1, 3)]) * 100
    assert row["mean"] == pytest.approx(kept.mean(), abs=1e-4) and row["n_nan"] == 1


def test_duplicate_cells_are_shown_once(params, root, smoke_raw):
    """A cell marked `same_as` (the same objective as another method at that depth) has no row and no
    missing runs; the report names the method it repeats and why."""
    from alpkd import config, report

    smoke_raw.update(profile="handmade")
    smoke_raw["data"]["tasks"], smoke_raw["student"]["depths"] = list(TASKS), DEPTHS
    smoke_raw["distill"]["methods"], smoke_raw["distill"]["seeds"] = [*METHODS, "pkd"], SEEDS
    for task in TASKS:
        write_json(root / "metrics" / "students" / f"{task}-1" / "pkd" / "same_as.json",
                   {"task": task, "depth": 1, "method": "pkd", "same_as": "kd", "why": "..."})
    for task in TASKS:  # PKD at 2 layers is run: give it results
        for seed in SEEDS:
            write_json(root / "metrics" / "students" / f"{task}-2" / "pkd" / f"s{seed}.json",
                       record(task, 2, "pkd", seed, 0.5))
    result = report.write_report(config.validate(smoke_raw), root)
    md = (root / "report" / "results.md").read_text()
    rows = table_rows(md)
    assert ("2", "PKD") in rows and ("1", "PKD") not in rows
    assert "PKD at 1 layer(s) = KD" in md
    assert not [m for m in result["missing"] if "-1-pkd-" in m]


def test_plot_tables_are_one_task_and_depth_with_a_column_per_method(params, root):
    """report/plots/: the files `dvc plots show` draws, checked against the records and logs read by hand."""
    from alpkd import report

    report.write_report(params, root)
    plots = root / "report" / "plots"
    assert sorted(p.name for p in (plots / "scores").iterdir()) == ["average.csv", "mrpc.csv", "rte.csv"]
    assert sorted(p.name for p in (plots / "curves").iterdir()) == sorted(f"{t}-{d}.csv" for t in TASKS for d in DEPTHS)
    scores = pd.read_csv(plots / "scores" / "rte.csv")
    assert list(scores.columns) == ["depth", *METHODS] and sorted(scores.depth) == sorted(DEPTHS)
    for method in METHODS:
        for depth in DEPTHS:
            expected = np.mean([root.scores[("rte", depth, method, s)] for s in SEEDS]) * 100
            got = scores.loc[scores.depth == depth, method].iloc[0]
            assert got == pytest.approx(expected, abs=1e-3)
    curves = pd.read_csv(plots / "curves" / "mrpc-1.csv")
    assert list(curves.columns) == ["step", *METHODS] and list(curves.step) == [1, 2, 3]
    for method in METHODS:  # the mean over the seeds that ran (alp_no has no seed 3 at mrpc-1)
        logs = [pd.read_csv(root / "logs" / "mrpc-1" / method / f"s{s}.csv") for s in SEEDS
                if ("mrpc", 1, method, s) != MISSING]
        expected = np.mean([log["loss_ce"].to_numpy() for log in logs], axis=0)
        np.testing.assert_allclose(curves[method].to_numpy(), expected, atol=1e-4)
    # a file left by an earlier grid is removed
    (plots / "curves" / "cola-1.csv").write_text("step\n")
    report.write_report(params, root)
    assert not (plots / "curves" / "cola-1.csv").exists()


def test_cell_intervals_are_t_intervals_over_the_teachers():
    from scipy import stats

    from alpkd import report

    scores = [0.81, 0.84, 0.79, 0.83, 0.80, 0.86]
    one_teacher = pd.DataFrame({"role": "student", "task": "rte", "depth": 3, "method": "kd", "seed": range(1, 7),
                                "teacher_seed": 42, "score": scores})
    got = report.cell_intervals(one_teacher).iloc[0]
    # one teacher: its students are the units (scipy's one-sample t interval of the seeds' scores)
    ref = stats.ttest_1samp(100 * np.array(scores), 0).confidence_interval()
    assert got["mean"] == pytest.approx(100 * np.mean(scores))
    assert (got["low"], got["high"]) == (pytest.approx(ref.low), pytest.approx(ref.high))
    # three teachers: the teachers' means are the units (2 degrees of freedom), wider than the seeds taken alone
    three = one_teacher.assign(teacher_seed=[42, 42, 43, 43, 44, 44], score=[0.80, 0.81, 0.86, 0.85, 0.83, 0.83])
    by_teacher = report.cell_intervals(three).iloc[0]
    ref = stats.ttest_1samp([80.5, 85.5, 83.0], 0).confidence_interval()
    assert (by_teacher["low"], by_teacher["high"]) == (pytest.approx(ref.low), pytest.approx(ref.high))
    blind = report.cell_intervals(three.assign(teacher_seed=np.nan)).iloc[0]
    assert by_teacher["n_teachers"] == 3 and (by_teacher["high"] - by_teacher["low"]) > (blind["high"] - blind["low"])


def test_baselines_are_compared_among_themselves():
    from alpkd import report

    pairs = report.comparisons(["nokd", "kd", "pkd", "alp"])
    assert pairs == [("alp", "nokd"), ("alp", "kd"), ("alp", "pkd"), ("kd", "nokd"), ("pkd", "nokd"), ("pkd", "kd")]


def test_header_names_where_the_students_started_and_their_examples(params, root):
    from alpkd import report

    report.write_report(params, root)
    md = (root / "report" / "results.md").read_text()
    assert "of the fine-tuned teacher" in md and "`student.init_from: teacher`" in md
    data = params.data.model_copy(update={"max_train_samples": 20000})
    distill = params.distill.model_copy(update={"max_train_samples": 6000})
    student = params.student.model_copy(update={"init_from": "pretrained"})
    other = params.model_copy(update={"data": data, "distill": distill, "student": student})
    report.write_report(other, root)
    md = (root / "report" / "results.md").read_text()
    assert "of the pre-trained checkpoint the teacher was fine-tuned from" in md
    assert "`student.init_from: pretrained`" in md
    assert "teacher 20,000 (a fixed subsample), students the first 6,000 of the teacher's" in md
