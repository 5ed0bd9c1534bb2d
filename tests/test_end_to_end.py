"""The smoke pipeline end to end: a tiny teacher on RTE, then one depth-1 student per method."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from sklearn.metrics import accuracy_score
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from alpkd import cache, distill
from alpkd import methods as declared
from alpkd.paths import Layout, Run
from helpers import SMOKE, TASK, clone_teacher, glue_frame, run_cli, subsample_rows, TEACHER_SEED

pytestmark = pytest.mark.slow

ALP = ("alp", "alp_no", "alp_po", "alp_scaled")
# a one-layer student of every method but those that learn from a deeper student (tests/test_assist.py)
METHODS = [m for m in declared.BUILT_IN if not declared.get(m).assistants]
DEPTH, SEED = 1, 42


@pytest.fixture(scope="module")
def run_root(teacher_root, tmp_path_factory) -> Path:
    """A root of its own (the session's teacher root stays teacher-only for other tests)."""
    return clone_teacher(teacher_root, tmp_path_factory.mktemp("e2e") / "root")


@pytest.fixture(scope="module")
def runs(run_root, smoke_params) -> dict[str, dict]:
    """Every method distilled once into `run_root`; the returned records by method."""
    return {m: distill.distill_student(smoke_params, TASK, DEPTH, m, SEED, root=run_root) for m in METHODS}


def read_json(path):
    return json.loads(path.read_text())


@pytest.mark.parametrize("method", METHODS)
def test_metrics_file_is_complete(runs, run_root, method):
    path = Layout(run_root).student_metrics(Run(TASK, DEPTH, method, SEED))
    record = read_json(path)
    assert record == json.loads(json.dumps(runs[method]))  # the file is what the call returned
    assert (record["task"], record["method"], record["depth"], record["seed"]) == (TASK, method, DEPTH, SEED)
    assert record["headline"] == "accuracy"
    assert record["score"] == record["metrics"][record["headline"]]
    assert 0.0 <= record["metrics"]["accuracy"] <= 1.0
    assert record["train_time_s"] > 0
    assert record["train_examples"] == 48
    assert record["teacher_layers"] == 4 and record["init_layers"] == [3]
    assert record["teacher_cached"] == (method != "nokd")
    env = record["environment"]
    assert {"python", "torch", "transformers"} <= set(env)
    assert (env["numerics"], env["cpu_capability"], env["threads"], env["precision"]) == ("portable", "AVX2", 2, "fp32")
    # the teacher it learnt from: student seed 42 pairs with teacher seed 42 (the first of teacher.seeds)
    assert record["teacher_seed"] == 42
    assert record["teacher_fingerprint"] == cache.model_fingerprint(Layout(run_root).teacher_model(TASK, 42))


@pytest.mark.parametrize("method", METHODS)
def test_student_model_loads_and_scores_as_reported(runs, run_root, smoke_params, method):
    folder = Layout(run_root).student_model(Run(TASK, DEPTH, method, SEED))
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert model.config.num_hidden_layers == 1 and len(model.base_model.encoder.layer) == 1
    # accuracy recomputed here: the documented validation subsample, one example at a time, scikit-learn
    frame = glue_frame(TASK, "validation")
    rows = frame.iloc[subsample_rows(len(frame), smoke_params.data.max_eval_samples)]
    preds = []
    with torch.no_grad():
        for s1, s2 in zip(rows["sentence1"], rows["sentence2"]):
            enc = tokenizer(s1, s2, truncation=True, max_length=smoke_params.data.max_length, return_tensors="pt")
            preds.append(int(model(**enc).logits.argmax(-1)))
    expected = accuracy_score(rows["label"].to_numpy(), np.array(preds))
    assert runs[method]["metrics"]["accuracy"] == pytest.approx(expected, abs=1e-9)
    # the stored predictions are the split's examples in the split's order (the report pairs them by position)
    stored = read_json(Layout(run_root).predictions(Run(TASK, DEPTH, method, SEED)))["validation"]
    assert stored["labels"] == rows["label"].tolist()
    assert stored["predictions"] == preds


@pytest.mark.parametrize("method", METHODS)
def test_attention_maps_only_for_alp(runs, run_root, smoke_params, method):
    record = read_json(Layout(run_root).attention(Run(TASK, DEPTH, method, SEED)))
    if method not in ALP:
        assert record["weights"] is None
        if method == "rail":  # one draw per epoch, written with the run; a one-layer student has none to pair
            assert record["draws"] == [[]]
        return
    weights = np.array(record["weights"])
    assert weights.shape == (DEPTH, 4)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-5)
    assert np.all(weights >= 0)
    assert record["method"] == method and record["scale"] is (method == "alp_scaled")
    # the entropy written is that of the mean attention rows' distribution per example, between 0 and log2(4)
    assert 0.0 <= record["entropy_bits"][0] <= 2.0 + 1e-6
    steps = [h["step"] for h in record["history"]]
    assert steps[0] == 0 and steps[-1] == runs[method]["train_steps"] and steps == sorted(steps)
    # distill.attention_snapshots (3 in smoke) snapshots after step 0, whatever the run's length
    assert len(steps) == 1 + min(smoke_params.distill.attention_snapshots, runs[method]["train_steps"])


def test_no_temporary_files_or_checkpoints_left(runs, run_root):
    leftovers = [p for p in run_root.rglob("*") if ".tmp" in p.name]
    assert not leftovers, leftovers
    checkpoints = run_root / "checkpoints"
    assert not checkpoints.exists() or not any(checkpoints.iterdir())


def test_teacher_outputs(teacher_root):
    layout = Layout(teacher_root)
    record = read_json(layout.teacher_metrics(TASK, TEACHER_SEED))
    assert record["role"] == "teacher" and record["depth"] == 4 and record["score"] == record["metrics"]["accuracy"]
    assert AutoModelForSequenceClassification.from_pretrained(layout.teacher_model(TASK, TEACHER_SEED)).config.num_hidden_layers == 4
    assert layout.teacher_log(TASK, TEACHER_SEED).exists()
    assert not [p for p in teacher_root.rglob("*") if ".tmp" in p.name]


def test_cli_distill(teacher_root, tmp_path):
    root = clone_teacher(teacher_root, tmp_path / "cli")
    result = run_cli("--params", str(SMOKE.relative_to(SMOKE.parents[1])), "--out", str(root), "distill",
                     "--task", TASK, "--depth", str(DEPTH), "--method", "kd")
    assert result.returncode == 0, result.stderr[-3000:]
    json.loads(result.stdout)  # stdout is the JSON record alone
    # a progress line per finished student on stderr, with its place in the stage, time and score
    lines = [line for line in result.stderr.splitlines() if " distill rte-1  kd  seed " in line and "/2]" in line]
    assert len(lines) == 2 and "[1/2]" in lines[0] and "[2/2]" in lines[1] and "accuracy " in lines[1], result.stderr[-3000:]
    assert "stage done in" in lines[1] and "distill" not in result.stdout
    layout = Layout(root)
    record = read_json(layout.student_metrics(Run(TASK, DEPTH, "kd", SEED)))
    assert record["method"] == "kd" and record["score"] == record["metrics"]["accuracy"]
    assert (layout.student_model(Run(TASK, DEPTH, "kd", SEED)) / "config.json").exists()


def test_cli_refuses_depth_not_in_params(tmp_path):
    result = run_cli("--params", str(SMOKE), "--out", str(tmp_path), "distill", "--task", TASK, "--depth", "2",
                     "--method", "kd")
    assert result.returncode == 2 and "--depth 2" in result.stderr


def test_same_seed_same_result(teacher_root, smoke_params, tmp_path):
    """Determinism: the same ALP distillation in two fresh roots gives identical metrics and weights."""
    records, weights, attention = [], [], []
    for name in ("a", "b"):
        root = clone_teacher(teacher_root, tmp_path / name)
        records.append(distill.distill_student(smoke_params, TASK, DEPTH, "alp", SEED, root=root))
        run = Run(TASK, DEPTH, "alp", SEED)
        weights.append(load_file(Layout(root).student_model(run) / "model.safetensors"))
        attention.append(read_json(Layout(root).attention(run))["weights"])
    a, b = records
    assert a["metrics"] == b["metrics"] and a["score"] == b["score"]
    assert attention[0] == attention[1]
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key
