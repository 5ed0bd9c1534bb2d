"""The transfer set (`distill.transfer_samples`): training sentences only the teacher labels.

Checked against independent computations: the rows against a permutation drawn with numpy over the local GLUE
parquet read by pandas; the task loss against a hand-written cross-entropy; the cached teacher outputs against a
fresh forward pass of the saved teacher.
"""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from helpers import TASK, clone_teacher, glue_frame, one_line_error, params_file, run_cli, subsample_rows

N = 40  # transfer rows in these tests (RTE has 2,490 training rows; the smoke teacher takes 48)


def _params(smoke_raw, n=N, methods=("nokd", "kd", "alp")):
    from alpkd import config

    raw = copy.deepcopy(smoke_raw)
    raw["distill"].update(transfer_samples=n, methods=list(methods))
    return config.validate(raw, "test")


def _ids(tokenizer, frame):
    enc = tokenizer(list(frame["sentence1"]), list(frame["sentence2"]), truncation=True, max_length=64)
    return [tuple(x) for x in enc["input_ids"]]


def test_transfer_rows_follow_the_teachers_in_the_shuffle_and_carry_no_label(smoke_raw, teacher_root):
    """Rows 48..87 of the seed-0 permutation (the teacher has 0..47), disjoint from every labelled row, in order,
    with no label and cache rows counting on from the students' labelled rows."""
    from alpkd import data
    from alpkd.paths import Layout
    from alpkd.students import load_tokenizer

    params = _params(smoke_raw)
    tokenizer = load_tokenizer(params.teacher.model)
    ds = data.prepare_transfer(params.task(TASK), tokenizer, params.data, teacher_root, N, first_row=48)
    frame = glue_frame(TASK, "train")
    order = np.random.default_rng(0).permutation(len(frame))
    expected = _ids(tokenizer, frame.iloc[order[48:48 + N]])
    assert [tuple(x) for x in ds["input_ids"]] == expected
    teacher_rows = set(subsample_rows(len(frame), 48))
    assert not teacher_rows & set(order[48:48 + N])
    assert not set(expected) & set(_ids(tokenizer, frame.iloc[sorted(teacher_rows)]))
    assert ds["labels"] == [data.NO_LABEL] * N
    assert ds["cache_row"] == list(range(48, 48 + N))
    # not even loaded: the stored copy without its label column still gives the same transfer rows
    import pyarrow.parquet as pq

    path = Layout(teacher_root).data(TASK) / "train.parquet"
    table = pq.read_table(path)
    root = teacher_root.parent / "no_labels"
    copy_path = Layout(root).data(TASK) / "train.parquet"
    import shutil

    shutil.copytree(Layout(teacher_root).data(TASK), Layout(root).data(TASK), dirs_exist_ok=True)
    shutil.copy(Layout(teacher_root).data_source(TASK), Layout(root).data_source(TASK))
    pq.write_table(table.drop(["label"]), copy_path)
    again = data.prepare_transfer(params.task(TASK), tokenizer, params.data, root, N, first_row=48)
    assert again["input_ids"] == ds["input_ids"]


def test_a_transfer_row_never_reaches_the_task_loss():
    """The cross-entropy term is the mean over the labelled rows alone: whatever a transfer row's `labels` holds,
    the loss is the same, and equal to a hand-written cross-entropy on the labelled rows; a batch of transfer rows
    alone has no task term."""
    from helpers import distill_params

    from alpkd.methods import Batch, distillation_loss

    g = torch.Generator().manual_seed(0)
    logits, teacher = torch.randn(8, 3, generator=g), torch.randn(8, 3, generator=g)
    labels = torch.tensor([0, 2, 1, -100, -100, 1, -100, -100])
    labelled = labels != -100
    p = distill_params()
    loss, terms = distillation_loss("kd", p, Batch(logits, labels, teacher_logits=teacher, labelled=labelled))
    other = labels.clone()
    other[~labelled] = torch.tensor([0, 1, 2, 0])  # what a leaked label would change
    loss2, _ = distillation_loss("kd", p, Batch(logits, other, teacher_logits=teacher, labelled=labelled))
    assert torch.equal(loss, loss2)
    z = logits.double().numpy()
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    rows = np.flatnonzero(labelled.numpy())
    ce = -np.mean([logp[r, labels[r]] for r in rows])
    assert float(terms["ce"]) == pytest.approx(ce, rel=1e-6)
    none = torch.zeros(8, dtype=torch.bool)
    loss3, terms3 = distillation_loss("kd", p, Batch(logits, labels, teacher_logits=teacher, labelled=none))
    assert "ce" not in terms3 and float(loss3) == pytest.approx(p.kd_alpha * float(terms3["kd"]), rel=1e-6)


def test_the_cache_covers_the_transfer_rows_and_nokd_ignores_them(smoke_raw, teacher_root, tmp_path):
    """A cell's teacher outputs on the transfer rows equal a fresh forward pass of the saved teacher (float16 states
    as in the cache); the labelled rows come from the teacher's cache as before. Trained, KD sees 48 + 40 rows and
    records them; NO-KD (no teacher) trains on the 48 labelled rows exactly as without a transfer set."""
    from alpkd import distill
    from alpkd.evaluation import load_saved
    from alpkd.paths import Layout

    params = _params(smoke_raw)
    root = clone_teacher(teacher_root, tmp_path / "root")
    cell = distill.Cell(params, TASK, 1, "kd", root, 42)
    assert len(cell.transfer_ds) == 48 + N and len(cell.transfer_cache) == 48 + N
    assert cell.transfer_ds["labelled"] == [True] * 48 + [False] * N
    _, teacher = load_saved(Layout(root).teacher_model(TASK, 42), "")
    rows = [0, 47, 48, 60, 48 + N - 1]
    logits, states = cell.transfer_cache.rows(rows)
    base_logits, base_states = cell.caches["train"].rows([0, 47])
    assert torch.equal(logits[:2], base_logits) and torch.equal(states[:2], base_states)
    teacher.eval()
    for k, r in enumerate(rows[2:], 2):
        item = cell.transfer_ds[r]
        with torch.no_grad():
            out = teacher(input_ids=torch.tensor([item["input_ids"]]), attention_mask=torch.tensor([item["attention_mask"]]),
                          token_type_ids=torch.tensor([item["token_type_ids"]]), output_hidden_states=True)
        assert torch.allclose(logits[k], out.logits[0], atol=1e-5)
        cls = torch.stack([h[0, 0] for h in out.hidden_states[1:]]).half().float()
        assert torch.allclose(states[k], cls, atol=2e-3)

    out = distill.distill_group(params, TASK, 1, root, methods=["nokd", "kd"], seeds=[42])
    kd, nokd = out["kd"][0], out["nokd"][0]
    assert kd["transfer_examples"] == N and kd["train_examples"] == 48 and kd["train_steps"] == 6  # 88 rows / 16
    assert "transfer_examples" not in nokd and nokd["train_steps"] == 3
    plain = copy.deepcopy(smoke_raw)
    plain["distill"].update(methods=["nokd"])
    from alpkd import config

    base = clone_teacher(teacher_root, tmp_path / "base")
    alone = distill.distill_group(config.validate(plain, "test"), TASK, 1, base, methods=["nokd"], seeds=[42])
    layout_a, layout_b = Layout(root), Layout(base)
    from alpkd.paths import Run

    run = Run(TASK, 1, "nokd", 42)
    assert json.loads(layout_a.predictions(run).read_text()) == json.loads(layout_b.predictions(run).read_text())
    assert alone["nokd"][0]["score"] == nokd["score"]


def test_check_refuses_a_transfer_set_larger_than_the_unused_rows(smoke_raw, tmp_path):
    """RTE's 2,490 training rows, 48 the teacher's: 2,442 are left; one more is refused by `check` with the numbers,
    before anything loads."""
    raw = copy.deepcopy(smoke_raw)
    raw["distill"].update(transfer_samples=2443, methods=["nokd", "kd"])
    result = run_cli("--params", str(params_file(tmp_path / "a", raw)), "check", cwd=tmp_path)
    line = one_line_error(result, 2)
    assert "transfer_samples = 2443" in line and "2,490 training rows" in line and "0..2442" in line, line
    raw["distill"]["transfer_samples"] = 2442
    ok = run_cli("--params", str(params_file(tmp_path / "b", raw)), "check", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr[-2000:]


@pytest.mark.parametrize("change, needle", [
    ({"data": {"max_train_samples": None}}, "no row is left for a transfer set"),
    ({"distill": {"methods": ["kd", "takd"]}}, "a transfer set is for the methods that learn from the teacher alone"),
    ({"distill": {"transfer_samples": -1}}, "transfer_samples"),
])
def test_a_transfer_set_where_it_cannot_apply_is_one_error(smoke_raw, tmp_path, change, needle):
    raw = copy.deepcopy(smoke_raw)
    raw["distill"]["transfer_samples"] = 8
    for section, values in change.items():
        raw[section].update(values)
    raw["student"]["depths"] = [1, 2]  # so that TAKD has an assistant
    line = one_line_error(run_cli("--params", str(params_file(tmp_path, raw)), "check", cwd=tmp_path), 2)
    assert needle in line, line
