"""The DVC pipeline end to end on the smoke profile, in a fresh git repository (about 2 minutes).

Checks what a user of `dvc repro` relies on: it runs from a clean checkout, leaves `dvc status` clean, a second
`dvc repro` runs nothing, a distillation-only parameter re-runs the students and the report, never the
teacher, and a changed data file re-runs its own task and the report, never another task's teacher or students.
Also checks the committed notebooks are clean (fast).
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import REPO, changed_stages, make_repo, pipeline_env, ran_stages, sh

# KD, ALP (layer attention) and PKD, which at one student layer is KD: a duplicate cell that trains nothing
METHODS = ["kd", "alp", "pkd"]
TRAINED = ["kd", "alp"]
# the assist stage runs with no assisted method too (it then writes only its summaries): it depends on distill.*
DISTILL_STAGES = {"distill@rte-1", "assist@rte"}


@pytest.fixture(scope="module")
def env() -> dict:
    return pipeline_env()


@pytest.fixture(scope="module")
def repo(tmp_path_factory, env) -> Path:
    """The checkout with params.yaml set to the smoke profile (two methods)."""
    params = yaml.safe_load((REPO / "profiles" / "smoke.yaml").read_text())
    params["distill"]["methods"] = METHODS
    return make_repo(tmp_path_factory.mktemp("pipeline"), env, params)


@pytest.fixture(scope="module")
def first_repro(repo, env) -> subprocess.CompletedProcess:
    return sh(["dvc", "repro"], repo, env)


@pytest.mark.slow
def test_repro_from_a_fresh_checkout(repo, first_repro):
    assert ran_stages(first_repro.stdout) == {"data@rte", "teacher@rte", "report", *DISTILL_STAGES}
    assert (repo / "dvc.lock").exists()
    for seed in (42, 43):  # one teacher per teacher seed
        assert json.loads((repo / "metrics" / "teacher" / "rte" / f"s{seed}.json").read_text())["profile"] == "smoke"
    assert (repo / "runs" / "distill-rte-1.ipynb").exists()  # one stage per (task, depth)
    for method in TRAINED:  # <kind>/<task>-<depth>/<method>/s<seed>
        assert json.loads((repo / "metrics" / "students" / "rte-1" / method / "s42.json").read_text())["method"] == method
        for seed, teacher in ((42, 42), (43, 43)):  # student seed k learns from teacher seed k
            rec = json.loads((repo / "metrics" / "students" / "rte-1" / method / f"s{seed}.json").read_text())
            assert rec["teacher_seed"] == teacher
        assert (repo / "models" / "rte" / "rte-1" / method / "s42" / "config.json").exists()
        assert (repo / "predictions" / "rte-1" / method / "s42.json").exists()
        assert (repo / "logs" / "rte-1" / method / "s42.csv").exists()
    attention = json.loads((repo / "attention" / "rte-1" / "alp" / "s42.json").read_text())
    assert len(attention["weights"]) == 1 and len(attention["weights"][0]) == 4
    assert json.loads((repo / "attention" / "rte-1" / "kd" / "s42.json").read_text())["weights"] is None
    # the duplicate trained nothing and says which method it repeats
    assert json.loads((repo / "metrics" / "students" / "rte-1" / "pkd" / "same_as.json").read_text())["same_as"] == "kd"
    assert not (repo / "models" / "rte" / "rte-1" / "pkd").exists()
    # every stage's process ran with the portable numerics of params.yaml (the test's environment had none):
    # the data stage is a CLI step, the teacher and distill stages papermill kernels
    records = [*(repo / "metrics" / "teacher").rglob("s[0-9]*.json"), *(repo / "metrics" / "students").rglob("s[0-9]*.json")]
    assert len(records) == 2 + 2 * len(TRAINED)
    for path in records:
        env = json.loads(path.read_text())["environment"]
        assert (env["numerics"], env["cpu_capability"], env["threads"]) == ("portable", "AVX2", 2), path
        assert env["variables"] == {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2,STRICT",
                                    "ONEDNN_MAX_CPU_ISA": "AVX2", "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2",
                                    "OMP_WAIT_POLICY": "PASSIVE"}
        assert env["cpu"]
    md = (repo / "report" / "results.md").read_text()
    assert "`smoke`" in md and "tiny (4 layers)" in md and "| 1 | ALP |" in md
    assert "numerics portable" in md and "AVX2 kernels" in md
    assert "| 1 | PKD |" not in md and "PKD at 1 layer(s) = KD" in md and "| – | trivial |" in md
    assert {p.name for p in (repo / "report" / "figures").iterdir()} == {
        "scores_vs_depth.png", "attention_rte.png", "attention_history_rte.png", "curves_rte.png"}
    # progress on the terminal (dvc's output), not in the executed notebooks
    out = first_repro.stdout + first_repro.stderr
    assert re.search(r"teacher rte  seed 43  \[2/2\]", out) and re.search(r"distill rte-1  alp  seed 43  \[4/4\]", out), out[-3000:]
    for nb in ("teacher-rte", "distill-rte-1"):
        assert "[1/" not in (repo / "runs" / f"{nb}.ipynb").read_text()
    # executed notebooks go to runs/, the sources stay clean
    assert not subprocess.run(["git", "status", "--porcelain", "notebooks"], cwd=repo, capture_output=True,
                              text=True).stdout


@pytest.mark.slow
def test_status_clean_and_second_repro_runs_nothing(repo, env, first_repro):
    assert changed_stages(repo, env) == {}
    again = sh(["dvc", "repro"], repo, env)
    assert ran_stages(again.stdout) == set()
    assert "didn't change" in again.stdout
    shown = sh(["dvc", "metrics", "show", "--json"], repo, env).stdout
    assert "report/summary.json" in shown and "metrics/teacher/rte/s42.json" not in shown  # records are plain outputs


@pytest.mark.slow
def test_distill_parameter_reruns_students_and_report_only(repo, env, first_repro):
    sh(["dvc", "repro"], repo, env)  # order-independent: start from an up-to-date pipeline
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["distill"]["temperature"] = 4.0
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = changed_stages(repo, env)
    assert set(status) == DISTILL_STAGES  # the report follows once their outputs change
    for entries in status.values():  # e.g. [{"changed deps": {"params.yaml": {"distill.temperature": "modified"}}}]
        changed = [kind["params.yaml"] for e in entries for kind in e.values() if "params.yaml" in kind]
        assert [list(c) for c in changed] == [["distill.temperature"]], entries
    assert "distill.temperature" in sh(["dvc", "params", "diff"], repo, env).stdout
    rerun = sh(["dvc", "repro"], repo, env)
    assert ran_stages(rerun.stdout) == {*DISTILL_STAGES, "report"}
    assert "Stage 'teacher@rte' didn't change" in rerun.stdout
    assert changed_stages(repo, env) == {}


@pytest.mark.slow
def test_a_changed_loss_reruns_no_teacher(repo, env, first_repro):
    """Editing a loss or a method's declaration re-runs the students and the report, never a teacher or the data."""
    sh(["dvc", "repro"], repo, env)  # order-independent: start from an up-to-date pipeline
    edited = [repo / "alpkd" / "losses.py", repo / "alpkd" / "methods.py"]
    before = [p.read_text() for p in edited]
    try:
        for path, text in zip(edited, before):
            path.write_text(text + "\n# an edit\n")
        assert set(changed_stages(repo, env)) == {*DISTILL_STAGES, "report"}
    finally:
        for path, text in zip(edited, before):
            path.write_text(text)
    assert changed_stages(repo, env) == {}


def test_committed_notebooks_are_clean():
    """Outputs only on `# NBVAL_CHECK_OUTPUT` cells (every output in 00_method, the executed companion), a
    `parameters` cell in each (scripts/notebooks.py check)."""
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "notebooks.py"), "check"], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_method_notebook_is_committed_with_its_outputs(tmp_path):
    """A reader on the web sees 00_method's heat-maps and objectives: the committed notebook stores them, and the
    check refuses it stripped (or with the heat-map cell's figure gone)."""
    import copy
    import importlib.util

    import nbformat

    spec = importlib.util.spec_from_file_location("notebooks_script", REPO / "scripts" / "notebooks.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    nb = nbformat.read(REPO / "notebooks" / "00_method.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    heatmap = [c for c in code if "attention_heatmap(" in c.source and not c.source.lstrip().startswith("import")]
    assert heatmap and all(any("image/png" in o.get("data", {}) for o in c.outputs) for c in heatmap)
    objectives = [c for c in code if c.source.startswith("p = config.load(params_file).distill")]
    assert objectives and "ALP-NO  total =" in "".join(o.get("text", "") for o in objectives[0].outputs)
    assert script.problems(nb, executed=True) == []
    assert script.problems(script.strip(copy.deepcopy(nb)), executed=True)
    nb_without_figure = copy.deepcopy(nb)
    for cell in nb_without_figure.cells:
        if cell.cell_type == "code" and "attention_heatmap(" in cell.source and "import" not in cell.source:
            cell.outputs = []
    assert any("stores no output" in p for p in script.problems(nb_without_figure, executed=True))


def test_stage_params_exist_in_every_profile():
    """Every parameter a stage lists is present in each profile (dvc refuses to run on a missing one)."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    listed = {p for stage in stages.values() for p in (stage.get("do") or stage).get("params", [])}
    for profile in sorted((REPO / "profiles").glob("*.yaml")):
        raw = yaml.safe_load(profile.read_text())
        for key in listed:
            node = raw
            for part in key.split("."):
                assert isinstance(node, dict) and part in node, f"{profile.name} has no {key} (listed in dvc.yaml)"
                node = node[part]


# --- sharing results: a DVC remote, queued experiments ------------------------------------------------------
@pytest.mark.slow
def test_remote_round_trip(repo, env, first_repro, tmp_path):
    """After `dvc push` to a folder remote, a fresh clone `dvc pull`s everything: `dvc status` is clean and
    `dvc repro` runs nothing (models, caches and predictions come from the remote, not from re-computing)."""
    sh(["dvc", "repro"], repo, env)  # order-independent: start from an up-to-date pipeline
    remote = tmp_path / "remote"
    sh(["dvc", "remote", "add", "--force", "-d", "shared", str(remote)], repo, env)
    sh(["dvc", "push"], repo, env)
    sh(["git", "add", "-A"], repo, env)  # dvc.lock, .dvc/config and the uncached records, as the project commits them
    sh(["git", "commit", "-q", "--allow-empty", "-m", "a finished run"], repo, env)
    clone = tmp_path / "clone"
    sh(["git", "clone", "-q", str(repo), str(clone)], tmp_path, env)
    assert not (clone / "models" / "rte" / "teacher").exists()  # git holds no model, no cache
    sh(["dvc", "pull"], clone, env)
    assert (clone / "models" / "rte" / "teacher" / "s42" / "model.safetensors").exists()
    assert (clone / "predictions" / "rte-1" / "kd" / "s42.json").read_text() == \
        (repo / "predictions" / "rte-1" / "kd" / "s42.json").read_text()
    assert changed_stages(clone, env) == {}
    again = sh(["dvc", "repro"], clone, env)
    assert ran_stages(again.stdout) == set()


@pytest.mark.slow
def test_queued_experiments_on_two_workers(repo, env, first_repro):
    """Two parameter sets queued, run by `dvc queue start -j 2`; `dvc exp show` has a row for each with the
    headline metrics of report/summary.json, and no per-run records among its columns."""
    import time

    sh(["dvc", "repro"], repo, env)
    sh(["git", "add", "-A"], repo, env)
    sh(["git", "commit", "-q", "--allow-empty", "-m", "baseline"], repo, env)
    for t in ("2.0", "8.0"):
        sh(["dvc", "exp", "run", "--queue", "-S", f"distill.temperature={t}", "--name", f"temp-{t[0]}"], repo, env)
    sh(["dvc", "queue", "start", "-j", "2"], repo, env)
    deadline = time.time() + 900
    while True:
        status = sh(["dvc", "queue", "status"], repo, env).stdout
        if not re.search(r"\b(Queued|Running)\b", status):
            break
        assert time.time() < deadline, status
        time.sleep(5)
    assert status.count("Success") == 2, status
    shown = json.loads(sh(["dvc", "exp", "show", "--json"], repo, env).stdout)
    rows = {rev["name"]: rev for baseline in shown for exp in (baseline.get("experiments") or [])
            for rev in exp.get("revs", []) if (rev.get("name") or "").startswith("temp-")}
    assert set(rows) == {"temp-2", "temp-8"}, shown
    for row in rows.values():
        data = row["data"]
        assert data["params"]["params.yaml"]["data"]["distill"]["temperature"] in (2.0, 8.0)
        metrics = data["metrics"]
        assert list(metrics) == ["report/summary.json"]  # the headline numbers alone, readable in a terminal
        assert "students_1L" in metrics["report/summary.json"]["data"]
    table = sh(["dvc", "exp", "show", "--no-pager", "--md"], repo, env).stdout
    assert "temp-2" in table and "temp-8" in table and "students_1L.kd" in table


@pytest.mark.slow
def test_plots_one_task_and_depth_a_colour_per_method(repo, env, first_repro):
    """`dvc plots show`: a plot per task (scores) and per (task, depth) (curves), the methods as lines told
    apart by colour (the template's colour is the method, the same colour for a method in every plot)."""
    shown = json.loads(sh(["dvc", "plots", "show", "--json"], repo, env).stdout)["data"]
    assert {"report/plots/scores/rte.csv", "report/plots/scores/average.csv", "report/plots/curves/rte-1.csv"} <= set(shown)
    for name in ("report/plots/scores/rte.csv", "report/plots/curves/rte-1.csv"):
        content = shown[name][0]["content"]
        color = content["encoding"]["color"]
        # the colour computed from the method's name (the legend lists only the methods drawn)
        assert color["field"] == "field" and color["scale"]["range"] == {"field": "colour"}
        expr = next(t["calculate"] for t in content["transform"] if t.get("as") == "colour")
        colours = dict(re.findall(r"datum\.field == '(\w+)' \? '(#[0-9a-f]{6})'", expr))
        assert set(TRAINED) <= set(colours) and len({colours[m] for m in TRAINED}) == len(TRAINED), colours
        drawn = {v["field"] for v in content["data"]["values"] if v["dvc_inferred_y_value"] != ""}
        assert drawn == set(TRAINED), drawn  # PKD (= KD at one layer) has no line of its own


def _toy_csv(flip: bool = False) -> str:
    rows = [f"toy review {i} {'good' if i % 2 else 'bad'},{(i % 2) ^ flip}" for i in range(24)]
    return "text,label\n" + "\n".join(rows) + "\n"


@pytest.mark.slow
def test_changed_data_file_reruns_its_task_only(tmp_path, env):
    """Two tasks (GLUE's RTE and a custom task from custom/toy/*.csv): dvc.lock holds each task's data hash, and
    a changed custom file re-runs that task's teacher, students and the report, not RTE's (whose copy re-runs
    and comes out identical: every data stage depends on custom/, dvc.yaml); so does a changed declaration."""
    params = yaml.safe_load((REPO / "profiles" / "smoke.yaml").read_text())
    params["distill"]["methods"] = ["kd"]
    params["custom_tasks"] = {"toy": {"train": "custom/toy/train.csv", "validation": "custom/toy/dev.csv",
                                      "text_columns": ["text"], "num_labels": 2, "metrics": ["accuracy"]}}
    params["data"]["tasks"] = ["rte", "toy"]
    repo = make_repo(tmp_path / "repo", env, params, {"custom/toy/train.csv": _toy_csv(),
                                                      "custom/toy/dev.csv": _toy_csv()})
    first = sh(["dvc", "repro"], repo, env)
    tasks = {"rte", "toy"}
    assert ran_stages(first.stdout) == {*(f"{s}@{t}" for s in ("data", "teacher", "assist") for t in tasks),
                                        "distill@rte-1", "distill@toy-1", "report"}
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    for task in tasks:
        outs = {o["path"]: o for o in lock[f"data@{task}"]["outs"]}
        assert outs[f"data/{task}"]["md5"].endswith(".dir") and outs[f"data/{task}"]["nfiles"] == 3  # + task.json
        assert f"data/{task}" in {d["path"] for d in lock[f"teacher@{task}"]["deps"]}
        assert f"data/{task}" in {d["path"] for d in lock[f"distill@{task}-1"]["deps"]}
    source = json.loads((repo / "data" / "rte.source.json").read_text())
    assert source["splits"]["validation"]["rows"] == 277
    assert json.loads((repo / "metrics" / "teacher" / "toy" / "s42.json").read_text())["data_source"] == \
        "custom files (custom_tasks.toy)"
    assert changed_stages(repo, env) == {}
    rte_hash = {o["path"]: o["md5"] for o in lock["data@rte"]["outs"] if "md5" in o}

    (repo / "custom" / "toy" / "train.csv").write_text(_toy_csv(flip=True))
    assert set(changed_stages(repo, env)) == {"data@rte", "data@toy"}  # both depend on custom/
    rerun = sh(["dvc", "repro"], repo, env)
    assert ran_stages(rerun.stdout) == {"data@rte", "data@toy", "teacher@toy", "distill@toy-1", "assist@toy", "report"}
    assert "Stage 'teacher@rte' didn't change" in rerun.stdout
    assert "Stage 'distill@rte-1' didn't change" in rerun.stdout
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    assert {o["path"]: o["md5"] for o in lock["data@rte"]["outs"] if "md5" in o} == rte_hash
    assert changed_stages(repo, env) == {}

    # a changed declaration (here the metrics) travels in data/toy/task.json: only toy's stages re-run
    params["custom_tasks"]["toy"]["metrics"] = ["accuracy", "matthews"]
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert set(changed_stages(repo, env)) == {"data@rte", "data@toy"}  # teachers do not list custom_tasks
    rerun = sh(["dvc", "repro"], repo, env)
    assert ran_stages(rerun.stdout) == {"data@rte", "data@toy", "teacher@toy", "distill@toy-1", "assist@toy", "report"}
    assert "matthews" in json.loads((repo / "metrics" / "teacher" / "toy" / "s42.json").read_text())["metrics"]
    assert changed_stages(repo, env) == {}
