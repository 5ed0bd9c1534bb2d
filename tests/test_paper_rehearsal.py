"""A rehearsal of the `paper` profile: `dvc repro` on profiles/paper.yaml in a fresh clone, with only what must
change to run here. Slow: on this project's 2-core machine (2026-12-01), with the 13 methods of this commit (49
stages, 16 teachers, 560 students), the `dvc repro` took about 14 minutes; with the first version's 8 methods
(41 stages, 384 students) 722 s with another test run beside it. Most of it is the per-run and per-stage start-up,
not the one training step each run takes; the bf16 test 22-46 s; the layout tests seconds.

What changes (`rehearsal_params`): the teacher is a local folder saved in the form of bert-base-uncased (12
layers, random weights, d=16: `synthetic.build_bert_folder`) instead of the hub id; GLUE is the synthetic copy in
the hub's layout (`synthetic.build_glue`, all eight tasks, MNLI's two validation splits, a few dozen rows per
split) read through ALPKD_GLUE_DIR; two teacher seeds and two student seeds instead of five; fp32 instead of
bf16 (a CPU); one epoch for teachers and students (one step of 32). Everything else is the file's own: every method, depths
6, 4 and 2, all eight tasks, eval_batch_size 256, save_steps 500, logging_steps 50, max_length 128. The grid
expected is derived from the loaded profile, so a method or task added to paper.yaml is rehearsed too.

Not covered: the hub download itself (a user with internet checks it: README, "Profiles").
"""
from __future__ import annotations

import copy
import json
import math
import os

import pytest
import yaml

from helpers import REPO, changed_stages, glue_frame, make_repo, pipeline_env, ran_stages, run_cli, sh
from synthetic import GLUE_LAYOUT, build_bert_folder, build_glue, splits

# the report's method labels, written out (the table shows these)
PLOT_LABELS = {"takd": "TAKD", "dgkd": "DGKD", "ceskd": "CES-KD"}

PAPER = REPO / "profiles" / "paper.yaml"
ROWS = 32  # per split and task: one batch of the profile's batch size 32
LOCAL_TASKS = ("cola", "sst2", "mrpc", "stsb", "rte")  # the tasks of ../shared/glue


def rehearsal_params(teacher_folder) -> dict:
    """profiles/paper.yaml with only what must change to run on a CPU without internet (module docstring)."""
    params = copy.deepcopy(yaml.safe_load(PAPER.read_text()))
    params["teacher"].update(model=str(teacher_folder), seeds=[42, 43], epochs=1)
    params["distill"].update(seeds=[1, 2], epochs=1)
    params["runtime"].update(precision="fp32")
    return params


# --- the synthetic GLUE against the real local copy (fast) --------------------------------------------------
@pytest.fixture(scope="module")
def glue(tmp_path_factory):
    return build_glue(tmp_path_factory.mktemp("glue"), rows=ROWS)


def _schema(path):
    import pyarrow.parquet as pq

    schema = pq.read_schema(path)
    features = json.loads(schema.metadata[b"huggingface"])["info"]["features"]
    return [(f.name, str(f.type)) for f in schema], features


@pytest.mark.parametrize("task", LOCAL_TASKS)
def test_synthetic_glue_has_the_real_layout(glue, task):
    """Same split files, column names and order, dtypes and HF features (label names) as ../shared/glue."""
    import pandas as pd

    real_dir = os.path.join(os.environ.get("ALPKD_GLUE_DIR", ""), task)
    if not os.path.isdir(real_dir):
        pytest.skip("needs the local GLUE copy")
    for split in ("train", "validation"):
        real = sorted(p for p in os.listdir(real_dir) if p.startswith(f"{split}-"))
        assert real == [f"{split}-00000-of-00001.parquet"]
        assert _schema(glue / task / real[0]) == _schema(os.path.join(real_dir, real[0]))
        real_frame, fake = glue_frame(task, split), pd.read_parquet(glue / task / real[0])
        assert list(fake.columns) == list(real_frame.columns) and (fake.dtypes == real_frame.dtypes).all()


def test_synthetic_glue_every_task_split_and_class(glue):
    """The hub's splits per task (MNLI's two validation and two test splits), every class in every labelled split."""
    import pandas as pd

    assert sorted(p.name for p in glue.iterdir()) == sorted(GLUE_LAYOUT)
    assert sorted(p.name for p in (glue / "mnli").iterdir()) == [
        f"{s}-00000-of-00001.parquet" for s in
        sorted(["train", "validation_matched", "validation_mismatched", "test_matched", "test_mismatched"])]
    for task, (columns, names) in GLUE_LAYOUT.items():
        for split in splits(task):
            frame = pd.read_parquet(glue / task / f"{split}-00000-of-00001.parquet")
            assert list(frame.columns) == [*columns, "label", "idx"] and len(frame) == ROWS
            if split.startswith("test"):
                assert set(frame["label"]) == {-1}
            elif names is not None:
                assert sorted(set(frame["label"])) == list(range(len(names))), (task, split)
            else:
                assert frame["label"].between(0, 5).all()


def test_synthetic_glue_loads_through_the_library(glue, monkeypatch):
    """`alpkd.data.load_task` reads every task of it as it reads ../shared/glue: MNLI with both validation splits."""
    from alpkd import data
    from alpkd.tasks import GLUE_TASKS

    monkeypatch.setenv(data.GLUE_ENV, str(glue))
    for task in GLUE_TASKS.values():
        loaded = data.load_task(task)
        assert list(loaded) == ["train", *task.validation_splits] and all(len(d) == ROWS for d in loaded.values())
    assert list(data.load_task(GLUE_TASKS["mnli"])) == ["train", "validation_matched", "validation_mismatched"]


def test_bert_folder_is_read_as_a_folder_teacher(tmp_path):
    """The saved folder has bert-base-uncased's files and is read as `teacher.model: <folder>` (12 layers)."""
    from alpkd import config, model_files

    folder = build_bert_folder(tmp_path / "bert")
    assert {"config.json", "model.safetensors", "vocab.txt", "tokenizer.json", "tokenizer_config.json"} <= {
        p.name for p in folder.iterdir()}
    params = rehearsal_params(folder)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    loaded = config.load(path)
    assert model_files.teacher_num_layers(loaded.teacher) == 12


# --- the rehearsal: dvc repro on the paper profile in a fresh clone (slow) ----------------------------------
# independently written expectations at n = 12 (1-based teacher layers, as the paper writes them)
PKD_PAIRS = {6: [2, 4, 6, 8, 10], 4: [3, 6, 9], 2: [6]}  # g(i) = i*n/m, the last student layer left to the logits
ALP_NO_BUCKETS = {6: [[1, 2], [3, 4], [5, 6], [7, 8], [9, 10], [11, 12]],
                  4: [[1, 2, 3], [4, 5, 6], [7, 8, 9], [10, 11, 12]],
                  2: [[1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12]]}
ALP_PO_BUCKETS = {6: [[1, 2, 3], [2, 3, 4, 5], [4, 5, 6, 7], [6, 7, 8, 9], [8, 9, 10, 11], [10, 11, 12]],
                  4: [[1, 2, 3, 4], [3, 4, 5, 6, 7], [6, 7, 8, 9, 10], [9, 10, 11, 12]],
                  2: [[1, 2, 3, 4, 5, 6, 7], [6, 7, 8, 9, 10, 11, 12]]}
# the controls: student layer i to teacher layer g(m+1-i) (reverse), or all to the last (all-to-one), 1-based
REVERSE_PAIRS = {6: [12, 10, 8, 6, 4], 4: [12, 9, 6], 2: [12]}
ALL_TO_ONE_PAIRS = {6: [12] * 5, 4: [12] * 3, 2: [12]}
# at two layers all-to-one's one pair (1 -> 12) is reverse's: trained once, as reverse
DUPLICATES = {(2, "all_to_one"): "reverse"}
ASSISTED = ("takd", "dgkd", "ceskd")  # not defined at the largest depth (6): no deeper student to assist


@pytest.fixture(scope="module")
def env(glue) -> dict:
    return dict(pipeline_env(local_glue=False), ALPKD_GLUE_DIR=str(glue))


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory, env):
    """(repo, params, the first `dvc repro`'s output) of the rehearsal."""
    teacher = build_bert_folder(tmp_path_factory.mktemp("bert-base-uncased-like"))
    params = rehearsal_params(teacher)
    repo = make_repo(tmp_path_factory.mktemp("paper"), env, params)
    assert "paper profile" in sh(["python", "-m", "alpkd", "check"], repo, env).stdout
    return repo, params, sh(["dvc", "repro"], repo, env, timeout=3600)


@pytest.mark.slow
def test_rehearsal_ran_every_stage(rehearsal, env):
    """Every stage of `dvc stage list` ran once; `dvc status` is clean and a second `dvc repro` runs nothing."""
    repo, _, first = rehearsal
    stages = set(sh(["dvc", "stage", "list", "--name-only"], repo, env).stdout.split())
    assert ran_stages(first.stdout) == stages
    assert changed_stages(repo, env) == {}
    again = sh(["dvc", "repro"], repo, env)
    assert ran_stages(again.stdout) == set() and "didn't change" in again.stdout


def _untrained(params) -> dict:
    """(depth, method) -> "same_as" or "not_defined": the cells of the grid that train nothing, by hand."""
    depths, methods = params["student"]["depths"], params["distill"]["methods"]
    out = {cell: "same_as" for cell in DUPLICATES if cell[1] in methods and cell[0] in depths}
    return out | {(max(depths), m): "not_defined" for m in methods if m in ASSISTED}


def _cells(params) -> list[tuple[int, str]]:
    """The (depth, method) cells that train."""
    skip = _untrained(params)
    return [(d, m) for d in params["student"]["depths"] for m in params["distill"]["methods"] if (d, m) not in skip]


def _grid(params):
    return [(t, d, m, s) for t in params["data"]["tasks"] for d, m in _cells(params) for s in params["distill"]["seeds"]]


@pytest.mark.slow
def test_rehearsal_every_run_has_its_record_and_predictions(rehearsal):
    """Each (task, depth, method, seed) of the profile's grid: a record, predictions on every validation split
    (MNLI's two), an attention record; teachers: one per (task, seed) with 12 layers. The cells that train nothing
    (`_untrained`: all-to-one at 2 layers is reverse; the assisted methods at 6 have no assistant) leave their
    marker and no record; an assisted student names its assistants."""
    from alpkd.paths import Layout, Run
    from alpkd.tasks import GLUE_TASKS

    repo, params, _ = rehearsal
    layout = Layout(repo)
    teacher_seeds = params["teacher"]["seeds"]
    for task in params["data"]["tasks"]:
        for seed in teacher_seeds:
            rec = json.loads(layout.teacher_metrics(task, seed).read_text())
            assert rec["depth"] == 12 and rec["profile"] == "paper"
            assert rec["environment"]["precision"] == "fp32"
    used = {}
    for task, depth, method, seed in _grid(params):
        run = Run(task, depth, method, seed)
        rec = json.loads(layout.student_metrics(run).read_text())
        assert (rec["method"], rec["depth"], rec["teacher_layers"]) == (method, depth, 12)
        assert rec["teacher_seed"] in teacher_seeds
        used.setdefault((task, depth, method), set()).add(rec["teacher_seed"])
        splits_ = GLUE_TASKS[task].validation_splits
        preds = json.loads(layout.predictions(run).read_text())
        assert [s for s in splits_ if s in preds] == list(splits_)
        for split in splits_:
            assert len(preds[split]["predictions"]) == len(preds[split]["labels"]) == ROWS
        assert layout.attention(run).exists()
        assert not layout.same_as(task, depth, method).exists()
        if method in ASSISTED:  # every deeper depth's KD student of the same seed, smallest first
            deeper = sorted(d for d in params["student"]["depths"] if d > depth)
            assert rec["assistants"] == [f"{d}-layer kd s{seed}" for d in deeper]
    for task in params["data"]["tasks"]:
        for (depth, method), kind in _untrained(params).items():
            marker = layout.same_as(task, depth, method) if kind == "same_as" else layout.not_defined(task, depth, method)
            assert json.loads(marker.read_text())["method"] == method
            assert not layout.student_metrics(Run(task, depth, method, params["distill"]["seeds"][0])).exists()
    assert all(seen == set(teacher_seeds) for seen in used.values())  # a student of each seed, one per teacher
    mnli = json.loads(layout.student_metrics(Run("mnli", 6, "alp", params["distill"]["seeds"][0])).read_text())
    assert set(mnli["metrics"]) == {"accuracy_matched", "accuracy_mismatched"}
    assert mnli["headline"] == "accuracy_matched"
    qqp = json.loads(layout.student_metrics(Run("qqp", 6, "kd", params["distill"]["seeds"][0])).read_text())
    assert set(qqp["metrics"]) == {"f1", "accuracy"} and qqp["headline"] == "f1"


@pytest.mark.slow
def test_rehearsal_layer_mappings_at_twelve_teacher_layers(rehearsal):
    """PKD's pairs, ALP-NO's and ALP-PO's buckets (the support of the attention) and RAIL-KD's draws, at n = 12
    and m = 6, 4, 2, against the hand-listed expectations above."""
    import numpy as np

    from alpkd.paths import Layout, Run

    repo, params, _ = rehearsal
    layout = Layout(repo)
    epochs = params["distill"]["epochs"]
    draws = {d: [] for d in params["student"]["depths"]}
    for task, depth, method, seed in _grid(params):
        if task != "mnli":  # the mappings do not depend on the task: one task's records are enough
            continue
        att = json.loads(layout.attention(Run(task, depth, method, seed)).read_text())
        if method in ("pkd", "reverse", "all_to_one"):
            expected = {"pkd": PKD_PAIRS, "reverse": REVERSE_PAIRS, "all_to_one": ALL_TO_ONE_PAIRS}[method]
            assert [j + 1 for j in att["pairs"]] == expected[depth]
        elif method == "rail":
            assert len(att["draws"]) == math.ceil(epochs)
            for epoch, draw in enumerate(att["draws"]):  # m-1 distinct intermediate layers (1..11), sorted
                assert len(draw) == depth - 1 and draw == sorted(set(draw)) and all(0 <= j <= 10 for j in draw)
                # drawn without replacement from the 11 intermediate layers, seeded by (run seed, epoch)
                rng = np.random.default_rng([seed, epoch])
                assert draw == sorted(int(j) for j in rng.choice(11, size=depth - 1, replace=False))
            draws[depth].append(att["draws"][0])
        elif method in ("alp", "alp_scaled", "alp_no", "alp_po"):
            weights = np.asarray(att["weights"])  # (m, 12): the mean attention over the validation split
            assert weights.shape == (depth, 12)
            assert np.allclose(weights.sum(-1), 1.0, atol=1e-5)
            buckets = {"alp_no": ALP_NO_BUCKETS, "alp_po": ALP_PO_BUCKETS}.get(method)
            for i, row in enumerate(weights):
                allowed = set(buckets[depth][i]) if buckets else set(range(1, 13))
                assert {j + 1 for j in np.flatnonzero(row > 0)} <= allowed, (method, depth, i, row)
        else:
            assert att["weights"] is None
    if "rail" in params["distill"]["methods"] and 6 in draws:  # each seed its own draw (1 in 462 they agree)
        assert len({tuple(d) for d in draws[6]}) == len(params["distill"]["seeds"])


@pytest.mark.slow
def test_rehearsal_report(rehearsal):
    """The report of the eight tasks: a column per task and MNLI's two validation sets as two (`mnli` matched,
    `mnli-mm` mismatched, as GLUE reports them), the eight-task average, CoLA's trivial predictor at 0, the
    attention tables over 12 teacher layers, as many comparisons as the grid has, nothing NaN but what may be."""
    import numpy as np
    import pandas as pd

    repo, params, _ = rehearsal
    tasks, depths, methods = params["data"]["tasks"], params["student"]["depths"], params["distill"]["methods"]
    md = (repo / "report" / "results.md").read_text()
    assert "`paper`" in md and "12 layers" in md
    header = next(line for line in md.splitlines() if line.startswith("| layers"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    shown = [c.split(" (")[0] for c in columns[2:]]
    assert shown == [c for t in tasks for c in ([t, "mnli-mm"] if t == "mnli" else [t])] + ["average"]
    assert "mnli (acc-m)" in columns and "mnli-mm (acc-mm)" in columns and "cola (MCC)" in columns
    assert "qqp (F1)" in columns and "stsb (Pearson r)" in columns
    rows = [line for line in md.splitlines() if line.startswith("| ")]
    trivial = next(r for r in rows if "| trivial |" in r)
    cells = dict(zip(columns, [c.strip() for c in trivial.strip("|").split("|")]))
    assert cells["cola (MCC)"] == "0.0" and cells["stsb (Pearson r)"] == "undefined (constant)"
    # results.csv: every (role, layers, method) has every shown task and the average; NaN only where a seed's
    # metric is undefined (n_nan, flagged in the table)
    results = pd.read_csv(repo / "report" / "results.csv")
    students = results[results["role"] == "student"]
    assert len(students) == len(_cells(params)) * (len(tasks) + 2)
    assert set(students["task"]) == {*tasks, "mnli-mm", "average"}
    assert (students["n_seeds"] == len(params["distill"]["seeds"])).all()
    assert not results.loc[results["n_nan"] == 0, "mean"].isna().any(), results[results["mean"].isna()]
    for row in rows:  # no table cell NaN but an undefined metric, shown with its seed count (`NaN (1 of 2 seeds)`)
        assert "nan" not in row.lower().replace("nan (", ""), row
    summary = json.loads((repo / "report" / "summary.json").read_text())
    assert set(summary["teacher"]) == {*tasks, "mnli-mm", "average"}
    assert all(v is not None for v in summary["teacher"].values())
    assert all(summary[f"students_{d}L"][m] is not None for d, m in _cells(params))
    for (depth, method), kind in _untrained(params).items():  # said in the report, not left blank
        if kind == "not_defined":
            assert f"| {depth} | {PLOT_LABELS[method]} | not defined |" in md
    # the significance table: at each depth, every layer-mapping method (the ALP family, RAIL-KD) against each
    # baseline, ALP-scaled against ALP, the baselines among themselves, the controls against KD, PKD and ALP, the
    # assisted methods against KD and each other; a pair whose method trains nothing at a depth is left out
    baselines = [m for m in ("nokd", "kd", "pkd") if m in methods]
    pairs = [(a, b) for a in ("alp", "alp_no", "alp_po", "alp_scaled", "rail") for b in baselines]
    pairs += [("alp_scaled", "alp"), ("kd", "nokd"), ("pkd", "nokd"), ("pkd", "kd"), ("reverse", "kd"),
              ("all_to_one", "kd"), ("pkd", "reverse"), ("alp", "reverse"), ("alp", "all_to_one"), ("takd", "kd"),
              ("dgkd", "kd"), ("ceskd", "kd"), ("dgkd", "takd"), ("ceskd", "takd"), ("ceskd", "dgkd")]
    trained = set(_cells(params))
    expected = sum((d, a) in trained and (d, b) in trained for d in depths for a, b in pairs)
    if sorted(methods) == sorted(["nokd", "kd", "pkd", "alp", "alp_no", "alp_po", "alp_scaled", "rail", "reverse",
                                  "all_to_one", "takd", "dgkd", "ceskd"]):
        assert expected == 24 + 30 + 28  # 30 pairs a depth; 6 layers without the 6 assisted, 2 without all-to-one's 2
    sig = pd.read_csv(repo / "report" / "significance.csv")
    assert len(sig) == expected
    assert not sig[["gap", "low", "high", "p_value", "p_adjusted"]].isna().any().any()
    assert (sig["n_tasks"] == len(tasks)).all() and (sig["n_teachers"] == len(params["teacher"]["seeds"])).all()
    # ALP's attention over the 12 teacher layers, a row per (task, depth, ALP method)
    attention = pd.read_csv(repo / "report" / "attention.csv")
    alps = [m for m in methods if m.startswith("alp")]
    assert len(attention) == len(tasks) * len(depths) * len(alps)
    assert (attention["teacher_layers"] == 12).all()
    for r in attention.itertuples():
        for seed_top in r.top_layers.split(" / "):
            top = [int(j) for j in seed_top.strip("()").split(",")]
            assert len(top) == r.layers and all(1 <= j <= 12 for j in top)
    assert np.isfinite(attention["entropy_bits"]).all()


@pytest.mark.slow
def test_bf16_teacher_and_students_on_mnli(tmp_path, glue, monkeypatch):
    """`runtime.precision: bf16` (the profile's own, left out of the rehearsal): the data, teacher and distill
    steps of the CLI on MNLI with the 12-layer folder teacher, bf16 autocast on the CPU (the Trainer's `bf16`
    with `use_cpu`), KD, ALP and RAIL-KD at 2 layers; about 50 s. Every record says bf16 and holds both
    validation sets; the teacher cache stays float16 and finite."""
    import numpy as np

    from alpkd.paths import Layout, Run

    params = rehearsal_params(build_bert_folder(tmp_path / "bert"))
    params["runtime"]["precision"] = "bf16"
    params["data"]["tasks"], params["student"]["depths"] = ["mnli"], [2]
    params["teacher"]["seeds"], params["distill"]["seeds"] = [42], [1]
    params["distill"]["methods"] = [m for m in ("kd", "alp", "rail") if m in params["distill"]["methods"]]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    monkeypatch.setenv("ALPKD_GLUE_DIR", str(glue))
    out = tmp_path / "out"
    for step in (["data", "--task", "mnli"], ["teacher", "--task", "mnli"], ["distill", "--task", "mnli", "--depth", "2"]):
        result = run_cli("--params", str(path), "--out", str(out), *step, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
    layout = Layout(out)
    records = [layout.teacher_metrics("mnli", 42)] + [
        layout.student_metrics(Run("mnli", 2, m, 1)) for m in params["distill"]["methods"]]
    for rec_path in records:
        rec = json.loads(rec_path.read_text())
        assert rec["environment"]["precision"] == "bf16"
        assert set(rec["metrics"]) == {"accuracy_matched", "accuracy_mismatched"}
    states = np.load(layout.cache("mnli", 42) / "train" / "states.npy")
    assert states.dtype == np.float16 and states.shape == (ROWS, 12, 16) and np.isfinite(states).all()
